"""Advancing a flow execution: one transaction decides, records, and returns what to publish.

`advance_flow_execution` locks the flow execution row, so two advances of one flow execution
(two workers finishing two tasks at once) run one after the other and never dispatch the same
task twice. It writes the `queued` record and the ledger row of every execution it decides
to start in that same transaction; the caller publishes the returned dispatches after commit
(`flowworker.flows.dispatch`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from flowworker.flows.definition import FlowDefinition
from flowworker.flows.plan import Launch, Plan, Settle, plan_advance
from flowworker.headers import ExecutionIdentity
from flowworker.redact import task_input
from persistence.flows import (
    LockedFlowExecution,
    NewDispatch,
    fetch_dispatches,
    fetch_flow,
    insert_dispatches,
    lock_flow_execution,
    update_flow_execution_status,
)
from persistence.hierarchy import allocate_task_execution_idx
from persistence.reports import TaskReport, utcnow
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

_IN_FLIGHT = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task message to publish once the transaction that recorded it has committed."""

    celery_task: str
    kwargs: dict[str, Any]
    identity: ExecutionIdentity
    celery_task_id: str
    countdown: float


def fetch_definition(connection: Connection, flow_id: uuid.UUID) -> FlowDefinition:
    return FlowDefinition.from_document(fetch_flow(connection, flow_id).definition)


def advance_flow_execution(
    connection: Connection,
    flow_execution_id: uuid.UUID,
    *,
    redact_keys: Iterable[str] = (),
    completed_task: str | None = None,
) -> list[Dispatch]:
    """Start what is ready, settle what cannot run, update the flow execution's status.

    `completed_task`: the advance follows a completion of this task. While other executions
    of it are still queued or running, nothing can start (whatever needs the task needs all
    of its loop iterations) and nothing can end, so the advance stops there: a loop of N
    items costs N cheap advances and one full one, not N full ones.
    """
    locked = lock_flow_execution(connection, flow_execution_id)
    if locked.flow_id is None:
        return []  # an ad-hoc Celery workflow: Celery drives it, not us
    if completed_task is not None and any(
        row.status in _IN_FLIGHT
        for row in fetch_dispatches(connection, flow_execution_id, task_name=completed_task)
    ):
        return []
    definition = fetch_definition(connection, locked.flow_id)
    rows = fetch_dispatches(connection, flow_execution_id)
    cancelled = locked.status is ExecutionStatus.CANCELLED
    plan = plan_advance(definition, locked.inputs or {}, rows, cancelled=cancelled)
    dispatches = write_plan(connection, locked, plan, tuple(redact_keys))
    if plan.flow_status is not locked.status:
        finished = plan.flow_status.is_terminal
        update_flow_execution_status(
            connection, flow_execution_id, plan.flow_status, utcnow() if finished else None
        )
    return dispatches


def write_plan(
    connection: Connection, locked: LockedFlowExecution, plan: Plan, redact_keys: tuple[str, ...]
) -> list[Dispatch]:
    reports: list[TaskReport] = []
    ledger: list[NewDispatch] = []
    dispatches: list[Dispatch] = []
    for launch, idx in _allocate(connection, locked.id, plan.launches):
        celery_task_id = str(uuid.uuid4())
        reports.append(
            TaskReport(
                locked.id,
                launch.task.name,
                idx,
                ExecutionStatus.QUEUED,
                input=task_input((), launch.kwargs, redact_keys),
                celery_task_id=celery_task_id,
                attempt=launch.attempt,
            )
        )
        ledger.append(
            NewDispatch(launch.task.name, idx, launch.iteration, launch.attempt, celery_task_id)
        )
        identity = ExecutionIdentity(
            locked.id,
            launch.task.name,
            idx,
            locked.organization_id,
            retries=launch.attempt,
            published_at=time.time(),
        )
        dispatches.append(
            Dispatch(launch.task.task, launch.kwargs, identity, celery_task_id, launch.countdown)
        )
    for settle in plan.settles:
        idx = allocate_task_execution_idx(connection, locked.id, settle.task.name)
        reports.append(
            TaskReport(locked.id, settle.task.name, idx, settle.status, error=settle.error)
        )
        ledger.append(NewDispatch(settle.task.name, idx, 0, 0, None))
    if reports:
        upsert_task_executions(connection, reports)
        insert_dispatches(connection, locked.id, locked.organization_id, ledger)
    return dispatches


def _allocate(
    connection: Connection, flow_execution_id: uuid.UUID, launches: list[Launch]
) -> list[tuple[Launch, int]]:
    """An idx for every launch; a task's loop iterations get consecutive ones, in order."""
    by_task: dict[tuple[str, bool], list[Launch]] = {}
    for launch in launches:
        by_task.setdefault((launch.task.name, launch.attempt == 0), []).append(launch)
    allocated: list[tuple[Launch, int]] = []
    for (task_name, first_attempts), group in by_task.items():
        if first_attempts:
            first = allocate_task_execution_idx(
                connection, flow_execution_id, task_name, count=len(group)
            )
            allocated += [(launch, first + n) for n, launch in enumerate(group)]
        else:
            for launch in group:
                idx = allocate_task_execution_idx(connection, flow_execution_id, task_name)
                allocated.append((launch, idx))
    return allocated


__all__ = ["Dispatch", "Settle", "advance_flow_execution", "fetch_definition", "write_plan"]
