"""The end of a record's life: finding runs nobody will finish, and purging old records.

Every function works inside one organization (so it also runs under row-level security, as
an application role) and inside the caller's transaction. Purging is done in small keyset
batches, each meant to be its own short transaction: a batch locks at most `batch_size`
rows, and on PostgreSQL it skips rows another transaction holds (`SKIP LOCKED`) instead of
waiting behind a writer. Deleting a task execution deletes its status history too (the
foreign key cascades).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, or_, select

from persistence.models import Base, FlowExecution, Organization, TaskExecution
from persistence.status import ExecutionStatus

_org = Base.metadata.tables[Organization.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_te = Base.metadata.tables[TaskExecution.__tablename__]

#: What `purge` removes unless told otherwise: records that will not change any more.
#: `queued` and `running` records are only purged when asked for by name.
FINISHED_STATUSES = (
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.STALE,
    ExecutionStatus.DELETED,
)

#: (created_at, id) of the last row a batch handled; the next batch starts after it.
KeysetPosition = tuple[dt.datetime, uuid.UUID]


@dataclass(frozen=True, slots=True)
class RunningRecord:
    """A task execution still marked `running`: what the reaper needs to judge it."""

    id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int
    celery_task_id: str | None
    attempt: int
    worker: str | None
    started_at: dt.datetime | None
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PurgedBatch:
    deleted: int
    last: KeysetPosition | None


def fetch_organization_ids(connection: Connection) -> list[uuid.UUID]:
    """Every organization (the registry has no row-level policy, so any role sees it)."""
    return [uuid.UUID(str(row[0])) for row in connection.execute(select(_org.c.id))]


def fetch_running_task_executions(
    connection: Connection, organization_id: uuid.UUID, started_before: dt.datetime
) -> list[RunningRecord]:
    """Records of the organization left `running` since before `started_before`."""
    # A record keeps `running` only while its worker is silent, so `updated_at` is when it
    # started as far as the database knows; `started_at` is the worker's own clock.
    since = func.coalesce(_te.c.started_at, _te.c.updated_at)
    rows = connection.execute(
        select(
            _te.c.id,
            _te.c.flow_execution_id,
            _te.c.task_name,
            _te.c.task_execution_idx,
            _te.c.celery_task_id,
            _te.c.attempt,
            _te.c.worker,
            _te.c.started_at,
            _te.c.updated_at,
        )
        .where(
            _te.c.organization_id == organization_id,
            _te.c.status == ExecutionStatus.RUNNING.value,
            since < started_before,
            _te.c.updated_at < started_before,
        )
        .order_by(_te.c.created_at, _te.c.id)
    )
    return [RunningRecord(**row._mapping) for row in rows]


def fetch_purge_counts(
    connection: Connection,
    organization_id: uuid.UUID,
    created_before: dt.datetime,
    statuses: Iterable[ExecutionStatus],
) -> dict[ExecutionStatus, int]:
    """How many records of each status a purge would delete (a dry run)."""
    rows = connection.execute(
        select(_te.c.status, func.count())
        .where(
            _te.c.organization_id == organization_id,
            _te.c.status.in_([status.value for status in statuses]),
            _te.c.created_at < created_before,
        )
        .group_by(_te.c.status)
    )
    return {ExecutionStatus(status): int(count) for status, count in rows}


def delete_task_executions_batch(
    connection: Connection,
    organization_id: uuid.UUID,
    status: ExecutionStatus,
    created_before: dt.datetime,
    *,
    batch_size: int,
    after: KeysetPosition | None = None,
) -> PurgedBatch:
    """Delete up to `batch_size` of the oldest matching records after `after`.

    Returns how many went and where the next batch starts; `last` is None when nothing
    matched any more. Rows another transaction holds are skipped, not waited for.
    """
    query: Any = (
        select(_te.c.id, _te.c.created_at)
        .where(
            _te.c.organization_id == organization_id,
            _te.c.status == status.value,
            _te.c.created_at < created_before,
        )
        .order_by(_te.c.created_at, _te.c.id)
        .limit(batch_size)
    )
    if after is not None:
        after_created, after_id = after
        query = query.where(
            or_(
                _te.c.created_at > after_created,
                and_(_te.c.created_at == after_created, _te.c.id > after_id),
            )
        )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    chosen = connection.execute(query).all()
    if not chosen:
        return PurgedBatch(0, None)
    # The status is checked again: a row may have moved on since the SELECT (SQLite).
    deleted = connection.execute(
        delete(_te).where(_te.c.id.in_([row.id for row in chosen]), _te.c.status == status.value)
    ).rowcount
    last = chosen[-1]
    return PurgedBatch(int(deleted or 0), (last.created_at, last.id))


def _empty_flow_executions(organization_id: uuid.UUID, created_before: dt.datetime) -> Any:
    has_tasks = exists().where(_te.c.flow_execution_id == _fe.c.id)
    return and_(
        _fe.c.organization_id == organization_id,
        _fe.c.created_at < created_before,
        _fe.c.updated_at < created_before,
        ~has_tasks,
    )


def count_empty_flow_executions(
    connection: Connection, organization_id: uuid.UUID, created_before: dt.datetime
) -> int:
    """Old flow executions without any task execution left."""
    condition = _empty_flow_executions(organization_id, created_before)
    return int(connection.execute(select(func.count()).where(condition)).scalar() or 0)


def delete_empty_flow_executions_batch(
    connection: Connection,
    organization_id: uuid.UUID,
    created_before: dt.datetime,
    *,
    batch_size: int,
) -> int:
    """Delete up to `batch_size` old flow executions that hold no task execution.

    Their idx counters go with them (the foreign key cascades). Each deleted row no longer
    matches, so repeating the call makes progress without a keyset position.
    """
    condition = _empty_flow_executions(organization_id, created_before)
    query: Any = select(_fe.c.id).where(condition).order_by(_fe.c.id).limit(batch_size)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    chosen = [row.id for row in connection.execute(query)]
    if not chosen:
        return 0
    # Checked again under the lock: a task may have been recorded into it meanwhile.
    has_tasks = exists().where(_te.c.flow_execution_id == _fe.c.id)
    result = connection.execute(delete(_fe).where(_fe.c.id.in_(chosen), ~has_tasks))
    return int(result.rowcount or 0)


__all__ = [
    "FINISHED_STATUSES",
    "PurgedBatch",
    "RunningRecord",
    "count_empty_flow_executions",
    "delete_empty_flow_executions_batch",
    "delete_task_executions_batch",
    "fetch_organization_ids",
    "fetch_purge_counts",
    "fetch_running_task_executions",
]
