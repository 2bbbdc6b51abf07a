"""Re-executing a flow from one task (`PUT /task-executions` with `re_execute: true`).

Only a flow execution started from a flow definition can be re-executed: an ad-hoc Celery
workflow (`flow_executions.flow_id IS NULL`) has no definition to say what runs downstream.
"""

from __future__ import annotations

from sqlalchemy import Connection

from flowworker.api.errors import ReexecutionRefused, ReexecutionUnavailable
from persistence.records import FlowExecutionRecord, TaskExecutionRecord
from persistence.reports import UpsertResult


def reexecute_flow_from_task(
    connection: Connection,
    flow_execution: FlowExecutionRecord,
    task_execution: TaskExecutionRecord,
    modified_by: str,
) -> list[UpsertResult]:
    """Mark `task_execution` and everything downstream of it `stale` and dispatch them again
    with new `task_execution_idx` values; returns the changes to notify.

    Runs inside the caller's transaction (the caller commits, then notifies).

    HOOK for the flows engineer: the refusal of ad-hoc executions stays; replace the
    `ReexecutionUnavailable` below with the flow engine's re-execution.
    """
    if flow_execution.flow_id is None:
        raise ReexecutionRefused(
            f"flow execution {flow_execution.id} is an ad-hoc Celery workflow (it has no flow "
            "definition), so it cannot be re-executed; start the Celery workflow again instead"
        )
    raise ReexecutionUnavailable(
        "re-executing flows is not available in this version of flowworker"
    )
