"""Stored flows, their task lists, and the flow engine's dispatch ledger.

Repository functions: they take a `Connection` and never commit. The flow engine
(`flowworker.flows`) decides; this module only reads and writes rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, select, update

from persistence.errors import UnknownFlowExecution
from persistence.models import Base, Flow, FlowDispatch, FlowExecution, FlowTask, TaskExecution
from persistence.reports import utcnow
from persistence.status import ExecutionStatus

_flows = Base.metadata.tables[Flow.__tablename__]
_flow_tasks = Base.metadata.tables[FlowTask.__tablename__]
_dispatches = Base.metadata.tables[FlowDispatch.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_te = Base.metadata.tables[TaskExecution.__tablename__]


@dataclass(frozen=True, slots=True)
class StoredFlow:
    id: uuid.UUID
    name: str
    version: str
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LockedFlowExecution:
    id: uuid.UUID
    organization_id: uuid.UUID
    flow_id: uuid.UUID | None
    status: ExecutionStatus
    inputs: Any


@dataclass(frozen=True, slots=True)
class DispatchRow:
    """One ledger row with the current state of its task execution record."""

    task_name: str
    task_execution_idx: int
    iteration: int
    attempt: int
    superseded: bool
    celery_task_id: str | None
    status: ExecutionStatus
    output: Any
    error: Any


@dataclass(frozen=True, slots=True)
class NewDispatch:
    task_name: str
    task_execution_idx: int
    iteration: int
    attempt: int
    celery_task_id: str | None


def fetch_flow_version(
    connection: Connection, organization_id: uuid.UUID, name: str, version: str
) -> StoredFlow | None:
    row = connection.execute(
        select(_flows.c.id, _flows.c.name, _flows.c.version, _flows.c.definition).where(
            _flows.c.organization_id == organization_id,
            _flows.c.name == name,
            _flows.c.version == version,
        )
    ).first()
    return None if row is None else StoredFlow(row.id, row.name, row.version, row.definition)


def fetch_flow(connection: Connection, flow_id: uuid.UUID) -> StoredFlow:
    row = connection.execute(
        select(_flows.c.id, _flows.c.name, _flows.c.version, _flows.c.definition).where(
            _flows.c.id == flow_id
        )
    ).one()
    return StoredFlow(row.id, row.name, row.version, row.definition)


def insert_flow(
    connection: Connection,
    organization_id: uuid.UUID,
    name: str,
    version: str,
    definition: dict[str, Any],
    task_names: Iterable[str],
) -> uuid.UUID:
    """Store a flow definition with its task list (the names its executions may report)."""
    flow_id = uuid.uuid4()
    connection.execute(
        _flows.insert().values(
            id=flow_id,
            organization_id=organization_id,
            name=name,
            version=version,
            definition=definition,
            created_at=utcnow(),
        )
    )
    connection.execute(
        _flow_tasks.insert(),
        [
            {"flow_id": flow_id, "task_name": task_name, "organization_id": organization_id}
            for task_name in task_names
        ],
    )
    return flow_id


def lock_flow_execution(
    connection: Connection, flow_execution_id: uuid.UUID
) -> LockedFlowExecution:
    """Lock the flow execution row for the rest of the transaction.

    An UPDATE rather than SELECT ... FOR UPDATE: it locks on PostgreSQL and, as the first
    write of the transaction, takes SQLite's write lock too, so that two advances of one
    flow execution run one after the other on both backends.
    """
    row = connection.execute(
        update(_fe)
        .where(_fe.c.id == flow_execution_id)
        .values(updated_at=utcnow())
        .returning(_fe.c.id, _fe.c.organization_id, _fe.c.flow_id, _fe.c.status, _fe.c.inputs)
    ).first()
    if row is None:
        raise UnknownFlowExecution(f"flow execution {flow_execution_id} does not exist")
    return LockedFlowExecution(
        row.id, row.organization_id, row.flow_id, ExecutionStatus(row.status), row.inputs
    )


def update_flow_execution_status(
    connection: Connection,
    flow_execution_id: uuid.UUID,
    status: ExecutionStatus,
    finished_at: dt.datetime | None,
) -> None:
    connection.execute(
        update(_fe)
        .where(_fe.c.id == flow_execution_id)
        .values(status=status.value, finished_at=finished_at, updated_at=utcnow())
    )


def fetch_dispatches(
    connection: Connection,
    flow_execution_id: uuid.UUID,
    *,
    include_superseded: bool = False,
    task_name: str | None = None,
) -> list[DispatchRow]:
    """The ledger of a flow execution (or of one of its tasks) with each record's status,
    output and error."""
    query = (
        select(
            _dispatches.c.task_name,
            _dispatches.c.task_execution_idx,
            _dispatches.c.iteration,
            _dispatches.c.attempt,
            _dispatches.c.superseded,
            _dispatches.c.celery_task_id,
            _te.c.status,
            _te.c.output,
            _te.c.error,
        )
        .join(
            _te,
            and_(
                _te.c.flow_execution_id == _dispatches.c.flow_execution_id,
                _te.c.task_name == _dispatches.c.task_name,
                _te.c.task_execution_idx == _dispatches.c.task_execution_idx,
            ),
        )
        .where(_dispatches.c.flow_execution_id == flow_execution_id)
        .order_by(_dispatches.c.task_name, _dispatches.c.task_execution_idx)
    )
    if not include_superseded:
        query = query.where(_dispatches.c.superseded.is_(False))
    if task_name is not None:
        query = query.where(_dispatches.c.task_name == task_name)
    return [
        DispatchRow(
            row.task_name,
            row.task_execution_idx,
            row.iteration,
            row.attempt,
            row.superseded,
            row.celery_task_id,
            ExecutionStatus(row.status),
            row.output,
            row.error,
        )
        for row in connection.execute(query)
    ]


def insert_dispatches(
    connection: Connection,
    flow_execution_id: uuid.UUID,
    organization_id: uuid.UUID,
    dispatches: Sequence[NewDispatch],
) -> None:
    if not dispatches:
        return
    now = utcnow()
    connection.execute(
        _dispatches.insert(),
        [
            {
                "flow_execution_id": flow_execution_id,
                "task_name": dispatch.task_name,
                "task_execution_idx": dispatch.task_execution_idx,
                "organization_id": organization_id,
                "iteration": dispatch.iteration,
                "attempt": dispatch.attempt,
                "superseded": False,
                "celery_task_id": dispatch.celery_task_id,
                "created_at": now,
            }
            for dispatch in dispatches
        ],
    )


def fetch_record_status(
    connection: Connection, flow_execution_id: uuid.UUID, task_name: str, task_execution_idx: int
) -> ExecutionStatus | None:
    status = connection.execute(
        select(_te.c.status).where(
            _te.c.flow_execution_id == flow_execution_id,
            _te.c.task_name == task_name,
            _te.c.task_execution_idx == task_execution_idx,
        )
    ).scalar()
    return None if status is None else ExecutionStatus(status)


def supersede_dispatches(
    connection: Connection, flow_execution_id: uuid.UUID, task_names: Iterable[str]
) -> None:
    """Retire the current run of `task_names`: the engine will run them again."""
    connection.execute(
        update(_dispatches)
        .where(
            _dispatches.c.flow_execution_id == flow_execution_id,
            _dispatches.c.task_name.in_(list(task_names)),
        )
        .values(superseded=True)
    )


__all__ = [
    "DispatchRow",
    "LockedFlowExecution",
    "NewDispatch",
    "StoredFlow",
    "fetch_dispatches",
    "fetch_flow",
    "fetch_flow_version",
    "fetch_record_status",
    "insert_dispatches",
    "insert_flow",
    "lock_flow_execution",
    "supersede_dispatches",
    "update_flow_execution_status",
]
