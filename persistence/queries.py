"""Reading the history: the one query layer behind the Python API, the CLI and the HTTP API.

Every function takes a `Connection` whose transaction the caller opened with
`persistence.database.transaction(engine, organization_id)`, and also filters on
`organization_id` in SQL: SQLite has no row-level security, and the explicit condition is
what lets PostgreSQL use the `(organization_id, ...)` indexes.

Listings use keyset pagination on `(created_at, id)`: a page is "the next `limit` rows after
this key", so inserts between pages never shift a row onto the next page or off it, and
page 200 costs what page 1 costs. `created_at` never changes after the insert.
Soft-deleted records (status `deleted`) are left out of listings unless asked for; a lookup
by id returns a record whatever its status.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Select, Uuid, literal, select, tuple_
from sqlalchemy.sql.expression import ColumnElement

from persistence.errors import (
    InvalidCursor,
    InvalidQuery,
    UnknownFlowExecution,
    UnknownTaskExecution,
)
from persistence.filters import Order, TaskExecutionFilter, decode_cursor, encode_cursor
from persistence.models import (
    Base,
    FlowExecution,
    TaskExecution,
    TaskExecutionEvent,
    UTCDateTime,
)
from persistence.records import (
    FlowExecutionRecord,
    Page,
    StatusChangeRecord,
    TaskExecutionRecord,
    summarize,
)
from persistence.status import ExecutionStatus

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

_te = Base.metadata.tables[TaskExecution.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_events = Base.metadata.tables[TaskExecutionEvent.__tablename__]

# Selected in the records' field order, so a row unpacks straight into a record.
_TE_COLUMNS = tuple(_te.c[name] for name in TaskExecutionRecord.__dataclass_fields__)
_STATUS_POSITION = list(TaskExecutionRecord.__dataclass_fields__).index("status")
_FE_COLUMNS = tuple(
    _fe.c[name]
    for name in FlowExecutionRecord.__dataclass_fields__
    if name not in ("summary", "task_executions")
)
_EVENT_COLUMNS = tuple(_events.c[name] for name in StatusChangeRecord.__dataclass_fields__)


# -- task executions ---------------------------------------------------------------------


def _task_record(row: Any) -> TaskExecutionRecord:
    values = list(row)
    values[_STATUS_POSITION] = ExecutionStatus(values[_STATUS_POSITION])
    return TaskExecutionRecord(*values)


def _visible(statuses: frozenset[ExecutionStatus], include_deleted: bool) -> list[Any]:
    if len(statuses) == 1:  # `=` keeps the SQL string fixed; IN (...) is re-rendered per call
        (status,) = statuses
        return [_te.c.status == status.value]
    if statuses:
        return [_te.c.status.in_([status.value for status in sorted(statuses)])]
    if include_deleted:
        return []
    return [_te.c.status != ExecutionStatus.DELETED.value]


def _conditions(organization_id: uuid.UUID, query: TaskExecutionFilter) -> list[Any]:
    conditions = [_te.c.organization_id == organization_id]
    conditions += _visible(query.statuses, query.include_deleted)
    equal = {
        _te.c.flow_execution_id: query.flow_execution_id,
        _te.c.task_name: query.task_name,
        _te.c.celery_task_id: query.celery_task_id,
    }
    conditions += [column == value for column, value in equal.items() if value is not None]
    bounds = (
        (_te.c.created_at, query.created_after, query.created_before),
        (_te.c.updated_at, query.updated_after, query.updated_before),
    )
    for column, low, high in bounds:
        if low is not None:
            conditions.append(column >= low)
        if high is not None:
            conditions.append(column < high)
    return conditions


def _after_cursor(query: TaskExecutionFilter, cursor: str) -> ColumnElement[bool]:
    order, created_at, task_execution_id = decode_cursor(cursor)
    if order is not query.order:
        raise InvalidCursor(
            f"this cursor continues a {order.value}-first listing, "
            f"not a {query.order.value}-first one"
        )
    key = tuple_(_te.c.created_at, _te.c.id)
    after = tuple_(literal(created_at, UTCDateTime()), literal(task_execution_id, Uuid()))
    return key < after if order is Order.NEWEST else key > after


def fetch_task_executions(
    connection: Connection,
    organization_id: uuid.UUID,
    query: TaskExecutionFilter | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page:
    """One page of the organization's task executions matching `query`."""
    query = query or TaskExecutionFilter()
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
    conditions = _conditions(organization_id, query)
    if cursor is not None:
        conditions.append(_after_cursor(query, cursor))
    if query.order is Order.NEWEST:
        ordering = (_te.c.created_at.desc(), _te.c.id.desc())
    else:
        ordering = (_te.c.created_at.asc(), _te.c.id.asc())
    # one row more than asked tells whether another page exists, without a COUNT
    statement = select(*_TE_COLUMNS).where(*conditions).order_by(*ordering).limit(limit + 1)
    items = tuple(_task_record(row) for row in connection.execute(statement))
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    last = items[limit - 1]
    return Page(
        items=items[:limit], next_cursor=encode_cursor(query.order, last.created_at, last.id)
    )


_BY_ID: Select[Any] = select(*_TE_COLUMNS)


def fetch_task_execution(
    connection: Connection, organization_id: uuid.UUID, task_execution_id: uuid.UUID
) -> TaskExecutionRecord:
    """The task execution with this id, whatever its status; `UnknownTaskExecution` if none."""
    row = connection.execute(
        _BY_ID.where(_te.c.organization_id == organization_id, _te.c.id == task_execution_id)
    ).first()
    if row is None:
        raise UnknownTaskExecution(f"no task execution {task_execution_id} in this organization")
    return _task_record(row)


def fetch_task_attempts(
    connection: Connection,
    organization_id: uuid.UUID,
    flow_execution_id: uuid.UUID,
    task_name: str,
    *,
    include_deleted: bool = False,
) -> tuple[TaskExecutionRecord, ...]:
    """Every execution of one task in one flow execution, by `task_execution_idx`.

    Empty when the task never ran there (that is an answer, not an error).
    """
    statement = (
        select(*_TE_COLUMNS)
        .where(
            _te.c.organization_id == organization_id,
            _te.c.flow_execution_id == flow_execution_id,
            _te.c.task_name == task_name,
            *_visible(frozenset(), include_deleted),
        )
        .order_by(_te.c.task_execution_idx)
    )
    return tuple(_task_record(row) for row in connection.execute(statement))


# -- flow executions and history ---------------------------------------------------------


def fetch_flow_execution(
    connection: Connection,
    organization_id: uuid.UUID,
    flow_execution_id: uuid.UUID,
    *,
    include_deleted: bool = False,
) -> FlowExecutionRecord:
    """A flow execution, its task executions and their summary; `UnknownFlowExecution` if none."""
    row = connection.execute(
        select(*_FE_COLUMNS).where(
            _fe.c.organization_id == organization_id, _fe.c.id == flow_execution_id
        )
    ).first()
    if row is None:
        raise UnknownFlowExecution(f"no flow execution {flow_execution_id} in this organization")
    tasks_statement = (
        select(*_TE_COLUMNS)
        .where(
            _te.c.organization_id == organization_id,
            _te.c.flow_execution_id == flow_execution_id,
            *_visible(frozenset(), include_deleted),
        )
        .order_by(_te.c.created_at, _te.c.task_name, _te.c.task_execution_idx)
    )
    tasks = tuple(_task_record(task) for task in connection.execute(tasks_statement))
    values = row._asdict()
    values["status"] = ExecutionStatus(values["status"])
    return FlowExecutionRecord(**values, summary=summarize(tasks), task_executions=tasks)


def fetch_status_history(
    connection: Connection, organization_id: uuid.UUID, task_execution_id: uuid.UUID
) -> tuple[StatusChangeRecord, ...]:
    """Every status the task execution entered, oldest first; `UnknownTaskExecution` if none."""
    statement = (
        select(*_EVENT_COLUMNS)
        .where(
            _events.c.organization_id == organization_id,
            _events.c.task_execution_id == task_execution_id,
        )
        .order_by(_events.c.id)
    )
    changes = tuple(
        StatusChangeRecord(
            **{
                **row._asdict(),
                "from_status": row.from_status and ExecutionStatus(row.from_status),
                "to_status": ExecutionStatus(row.to_status),
            }
        )
        for row in connection.execute(statement)
    )
    if not changes:
        fetch_task_execution(connection, organization_id, task_execution_id)  # raises if unknown
    return changes


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Order",
    "TaskExecutionFilter",
    "decode_cursor",
    "encode_cursor",
    "fetch_flow_execution",
    "fetch_status_history",
    "fetch_task_attempts",
    "fetch_task_execution",
    "fetch_task_executions",
]
