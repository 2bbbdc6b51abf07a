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

The SQL lives in `persistence.statements`; `persistence.compiled` runs it (on PostgreSQL
without SQLAlchemy's per-call result machinery, see there).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection

from persistence import statements
from persistence.compiled import fetch_query_rows
from persistence.errors import (
    InvalidCursor,
    InvalidQuery,
    UnknownFlowExecution,
    UnknownTaskExecution,
)
from persistence.filters import Order, TaskExecutionFilter, decode_cursor, encode_cursor
from persistence.records import (
    FlowExecutionRecord,
    Page,
    StatusChangeRecord,
    TaskExecutionRecord,
    summarize,
    task_execution_record,
)
from persistence.status import ExecutionStatus

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

_STATUSES = {status.value: status for status in ExecutionStatus}  # cheaper than the Enum call


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
    # one row more than asked tells whether another page exists, without a COUNT
    parameters: dict[str, Any] = {"organization_id": organization_id, "limit": limit + 1}
    for name in statements.OPTIONAL_FILTERS:
        value = getattr(query, name)
        if value is not None:
            parameters[name] = value
    if cursor is not None:
        order, parameters["after_created_at"], parameters["after_id"] = decode_cursor(cursor)
        if order is not query.order:
            raise InvalidCursor(
                f"this cursor continues a {order.value}-first listing, "
                f"not a {query.order.value}-first one"
            )
    statement = statements.listing_statement(
        tuple(name for name in statements.OPTIONAL_FILTERS if name in parameters),
        tuple(sorted(status.value for status in query.statuses)),
        query.include_deleted,
        query.order,
        cursor is not None,
    )
    rows = fetch_query_rows(connection, statement, parameters)
    items = tuple([task_execution_record(row) for row in rows[:limit]])
    if len(rows) <= limit:
        return Page(items=items, next_cursor=None)
    last = items[-1]
    return Page(items=items, next_cursor=encode_cursor(query.order, last.created_at, last.id))


def fetch_task_execution(
    connection: Connection, organization_id: uuid.UUID, task_execution_id: uuid.UUID
) -> TaskExecutionRecord:
    """The task execution with this id, whatever its status; `UnknownTaskExecution` if none."""
    rows = fetch_query_rows(
        connection, statements.BY_ID, {"organization_id": organization_id, "id": task_execution_id}
    )
    if not rows:
        raise UnknownTaskExecution(f"no task execution {task_execution_id} in this organization")
    return task_execution_record(rows[0])


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
    parameters = {
        "organization_id": organization_id,
        "flow_execution_id": flow_execution_id,
        "task_name": task_name,
    }
    rows = fetch_query_rows(connection, statements.ATTEMPTS[include_deleted], parameters)
    return tuple([task_execution_record(row) for row in rows])


# -- flow executions and history ---------------------------------------------------------


def fetch_flow_execution(
    connection: Connection,
    organization_id: uuid.UUID,
    flow_execution_id: uuid.UUID,
    *,
    include_deleted: bool = False,
) -> FlowExecutionRecord:
    """A flow execution, its task executions and their summary; `UnknownFlowExecution` if none."""
    parameters = {"organization_id": organization_id, "flow_execution_id": flow_execution_id}
    found = fetch_query_rows(connection, statements.FLOW_EXECUTION, parameters)
    if not found:
        raise UnknownFlowExecution(f"no flow execution {flow_execution_id} in this organization")
    rows = fetch_query_rows(connection, statements.FLOW_TASKS[include_deleted], parameters)
    tasks = tuple([task_execution_record(task) for task in rows])
    values = dict(zip(statements.FE_NAMES, found[0], strict=True))
    values["status"] = _STATUSES[values["status"]]
    return FlowExecutionRecord(**values, summary=summarize(tasks), task_executions=tasks)


def fetch_status_history(
    connection: Connection, organization_id: uuid.UUID, task_execution_id: uuid.UUID
) -> tuple[StatusChangeRecord, ...]:
    """Every status the task execution entered, oldest first; `UnknownTaskExecution` if none."""
    parameters = {"organization_id": organization_id, "task_execution_id": task_execution_id}
    changes = []
    for row in fetch_query_rows(connection, statements.HISTORY, parameters):
        values = dict(zip(statements.EVENT_NAMES, row, strict=True))
        from_status = values["from_status"]
        values["from_status"] = None if from_status is None else _STATUSES[from_status]
        values["to_status"] = _STATUSES[values["to_status"]]
        changes.append(StatusChangeRecord(**values))
    if not changes:
        fetch_task_execution(connection, organization_id, task_execution_id)  # raises if unknown
    return tuple(changes)


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
