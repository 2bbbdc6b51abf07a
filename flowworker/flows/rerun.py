"""Re-executing a flow execution from one task.

The task and everything downstream of it run again: their completed and failed records
become `stale`, their ledger rows are superseded, and the engine dispatches them anew with
new idx values, so the new outputs feed the downstream templates. Refused while one of them
is still queued or running, or when a task it needs has not completed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from flowworker.flows.engine import Dispatch, advance_flow_execution, fetch_definition
from flowworker.flows.errors import RerunRefused
from flowworker.flows.graph import downstream_of
from flowworker.flows.plan import plan_advance
from persistence.errors import TaskNotInFlow
from persistence.flows import (
    fetch_dispatches,
    lock_flow_execution,
    supersede_dispatches,
    update_flow_execution_status,
)
from persistence.reports import TaskReport, UpsertResult
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

_STALE_FROM = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED)
_IN_FLIGHT = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class RerunOutcome:
    #: the tasks that run again, in dependency order
    task_names: tuple[str, ...]
    #: (task name, idx) of the records that became (dry run: would become) stale
    stale: tuple[tuple[str, int], ...]
    dry_run: bool
    results: tuple[UpsertResult, ...] = ()
    dispatches: tuple[Dispatch, ...] = field(default=())


def rerun_in_transaction(
    connection: Connection,
    flow_execution_id: uuid.UUID,
    from_task: str,
    *,
    dry_run: bool = False,
    actor: str = "system",
    redact_keys: Iterable[str] = (),
) -> RerunOutcome:
    """Mark stale and decide, in the caller's transaction; publish `dispatches` after commit."""
    locked = lock_flow_execution(connection, flow_execution_id)
    if locked.flow_id is None:
        raise RerunRefused(
            f"flow execution {flow_execution_id} is an ad-hoc Celery workflow (it has no flow "
            "definition), so it cannot be re-executed"
        )
    definition = fetch_definition(connection, locked.flow_id)
    if from_task not in definition.task_names:
        raise TaskNotInFlow(
            f"flow {definition.name!r} has no task {from_task!r} "
            f"(its tasks: {', '.join(definition.task_names)})"
        )
    dependencies = {task.name: task.depends_on for task in definition.tasks}
    names = downstream_of(dependencies, from_task)
    rows = fetch_dispatches(connection, flow_execution_id)
    busy = sorted(
        {row.task_name for row in rows if row.task_name in names and row.status in _IN_FLIGHT}
    )
    if busy:
        raise RerunRefused(
            f"task(s) {', '.join(map(repr, busy))} still queued or running; wait for them to "
            "finish or cancel the flow execution first"
        )
    states = plan_advance(definition, locked.inputs or {}, rows).states
    unmet = [d for d in definition.task(from_task).depends_on if states[d].status != "completed"]
    if unmet:
        raise RerunRefused(
            f"{from_task!r} needs the output of {', '.join(map(repr, unmet))}, which has not "
            "completed; re-execute from there instead"
        )
    stale = tuple(
        (row.task_name, row.task_execution_idx)
        for row in rows
        if row.task_name in names and row.status in _STALE_FROM
    )
    if dry_run:
        return RerunOutcome(tuple(names), stale, True)
    results = upsert_task_executions(
        connection,
        [
            TaskReport(flow_execution_id, name, idx, ExecutionStatus.STALE, modified_by=actor)
            for name, idx in stale
        ],
    )
    supersede_dispatches(connection, flow_execution_id, names)
    update_flow_execution_status(connection, flow_execution_id, ExecutionStatus.RUNNING, None)
    dispatches = advance_flow_execution(connection, flow_execution_id, redact_keys=redact_keys)
    return RerunOutcome(tuple(names), stale, False, tuple(results), tuple(dispatches))


__all__ = ["RerunOutcome", "rerun_in_transaction"]
