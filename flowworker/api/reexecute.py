"""Re-executing a flow from one task (`PUT /task-executions` with `re_execute: true`).

Only a flow execution started from a flow definition can be re-executed: an ad-hoc Celery
workflow (`flow_executions.flow_id IS NULL`) has no definition to say what runs downstream.
"""

from __future__ import annotations

from sqlalchemy import Connection

from flowworker.api.errors import ReexecutionRefused
from flowworker.config import Settings
from flowworker.flows.dispatch import publish_dispatches, publisher_app
from flowworker.flows.errors import RerunRefused
from flowworker.flows.rerun import rerun_in_transaction
from persistence.records import FlowExecutionRecord, TaskExecutionRecord
from persistence.reports import TaskReport, UpsertResult
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions


def reexecute_flow_from_task(
    connection: Connection,
    flow_execution: FlowExecutionRecord,
    task_execution: TaskExecutionRecord,
    modified_by: str,
) -> list[UpsertResult]:
    """Mark `task_execution` and everything downstream of it `stale` and dispatch them again
    with new `task_execution_idx` values; returns the changes to notify.

    Runs inside the caller's transaction (the caller commits, then notifies). The task
    messages are published at the end of it, before the commit: a worker's report of a new
    execution waits for the commit on the record's key, and the advance that follows it
    waits on the flow execution's row lock, so neither can see the state before it.
    """
    if flow_execution.flow_id is None:
        raise ReexecutionRefused(
            f"flow execution {flow_execution.id} is an ad-hoc Celery workflow (it has no flow "
            "definition), so it cannot be re-executed; start the Celery workflow again instead"
        )
    try:
        outcome = rerun_in_transaction(
            connection,
            flow_execution.id,
            task_execution.task_name,
            actor=modified_by,
            redact_keys=Settings.load().redact_keys,
        )
    except RerunRefused as exc:
        raise ReexecutionRefused(str(exc)) from exc
    failures = publish_dispatches(publisher_app(), outcome.dispatches)
    if failures:
        error = {"message": "could not publish the task; is the broker up?", "type": "PublishError"}
        upsert_task_executions(
            connection,
            [
                TaskReport(
                    flow_execution.id,
                    dispatch.identity.task_name,
                    dispatch.identity.task_execution_idx,
                    ExecutionStatus.FAILED,
                    error=error,
                )
                for dispatch, _ in failures
            ],
        )
    return list(outcome.results)
