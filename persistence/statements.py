"""The SQL of the query layer: Core statements, each built once, with bound parameters.

Building a statement per call costs more Python than running it, so a listing's statement is
built once per shape of filter (which fields are set, which statuses, order, cursor or not)
and the fixed lookups at import; only the parameter values change between calls. Every
statement says `organization_id = :organization_id` (see `persistence.queries`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import Integer, Select, String, Uuid, bindparam, select, tuple_
from sqlalchemy.sql.expression import ColumnElement

from persistence.filters import Order
from persistence.models import (
    Base,
    FlowExecution,
    TaskExecution,
    TaskExecutionEvent,
    UTCDateTime,
)
from persistence.records import FlowExecutionRecord, StatusChangeRecord, TaskExecutionRecord
from persistence.status import ExecutionStatus

_te = Base.metadata.tables[TaskExecution.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_events = Base.metadata.tables[TaskExecutionEvent.__tablename__]

# Selected in the records' field order, so that a row unpacks straight into a record.
_TE_COLUMNS = tuple(_te.c[name] for name in TaskExecutionRecord.__dataclass_fields__)
FE_NAMES = tuple(
    name
    for name in FlowExecutionRecord.__dataclass_fields__
    if name not in ("summary", "task_executions")
)
_FE_COLUMNS = tuple(_fe.c[name] for name in FE_NAMES)
EVENT_NAMES = tuple(StatusChangeRecord.__dataclass_fields__)
_EVENT_COLUMNS = tuple(_events.c[name] for name in EVENT_NAMES)


def _visible(statuses: tuple[str, ...], include_deleted: bool) -> list[Any]:
    if statuses:
        # one bound parameter each, fixed for this statement: an expanding IN would be
        # re-rendered on every execution
        return [_te.c.status.in_([bindparam(f"status_{s}", s) for s in statuses])]
    if include_deleted:
        return []
    return [_te.c.status != bindparam("deleted", ExecutionStatus.DELETED.value)]


# The optional conditions of a listing: filter field -> how it constrains a row.
OPTIONAL_FILTERS: dict[str, Callable[[Any], ColumnElement[bool]]] = {
    "flow_execution_id": lambda value: _te.c.flow_execution_id == value,
    "task_name": lambda value: _te.c.task_name == value,
    "celery_task_id": lambda value: _te.c.celery_task_id == value,
    "created_after": lambda value: _te.c.created_at >= value,
    "created_before": lambda value: _te.c.created_at < value,
    "updated_after": lambda value: _te.c.updated_at >= value,
    "updated_before": lambda value: _te.c.updated_at < value,
}
_KEY = tuple_(_te.c.created_at, _te.c.id)
_AFTER = tuple_(
    bindparam("after_created_at", type_=UTCDateTime()), bindparam("after_id", type_=Uuid())
)


@functools.lru_cache(maxsize=1024)
def listing_statement(
    present: tuple[str, ...],
    statuses: tuple[str, ...],
    include_deleted: bool,
    order: Order,
    after_cursor: bool,
) -> Select[Any]:
    """The statement for one shape of filter, built once (and so compiled once)."""
    conditions = [_te.c.organization_id == bindparam("organization_id", type_=Uuid())]
    conditions += _visible(statuses, include_deleted)
    conditions += [
        OPTIONAL_FILTERS[name](bindparam(name, type_=_te.c[_column_of(name)].type))
        for name in present
    ]
    if after_cursor:
        conditions.append(_KEY < _AFTER if order is Order.NEWEST else _KEY > _AFTER)
    if order is Order.NEWEST:
        ordering = (_te.c.created_at.desc(), _te.c.id.desc())
    else:
        ordering = (_te.c.created_at.asc(), _te.c.id.asc())
    return (
        select(*_TE_COLUMNS)
        .where(*conditions)
        .order_by(*ordering)
        .limit(bindparam("limit", type_=Integer()))
    )


def _column_of(filter_field: str) -> str:
    return filter_field.replace("_after", "_at").replace("_before", "_at")


BY_ID = select(*_TE_COLUMNS).where(
    _te.c.organization_id == bindparam("organization_id", type_=Uuid()),
    _te.c.id == bindparam("id", type_=Uuid()),
)
ATTEMPTS = {
    include_deleted: select(*_TE_COLUMNS)
    .where(
        _te.c.organization_id == bindparam("organization_id", type_=Uuid()),
        _te.c.flow_execution_id == bindparam("flow_execution_id", type_=Uuid()),
        _te.c.task_name == bindparam("task_name", type_=String()),
        *_visible((), include_deleted),
    )
    .order_by(_te.c.task_execution_idx)
    for include_deleted in (False, True)
}
FLOW_EXECUTION = select(*_FE_COLUMNS).where(
    _fe.c.organization_id == bindparam("organization_id", type_=Uuid()),
    _fe.c.id == bindparam("flow_execution_id", type_=Uuid()),
)
FLOW_TASKS = {
    include_deleted: select(*_TE_COLUMNS)
    .where(
        _te.c.organization_id == bindparam("organization_id", type_=Uuid()),
        _te.c.flow_execution_id == bindparam("flow_execution_id", type_=Uuid()),
        *_visible((), include_deleted),
    )
    .order_by(_te.c.created_at, _te.c.task_name, _te.c.task_execution_idx)
    for include_deleted in (False, True)
}
HISTORY = (
    select(*_EVENT_COLUMNS)
    .where(
        _events.c.organization_id == bindparam("organization_id", type_=Uuid()),
        _events.c.task_execution_id == bindparam("task_execution_id", type_=Uuid()),
    )
    .order_by(_events.c.id)
)
