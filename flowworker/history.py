"""The Python API for reading the recorded history; no web framework, no Celery needed.

    from flowworker.history import History

    with History("postgresql://app@db/flowworker", organization="acme") as history:
        for execution in history.iter_task_executions(statuses=["failed"]):
            print(execution.task_name, execution.error["message"])

Each call runs in its own short read transaction, scoped to the organization (row-level
security on PostgreSQL, an explicit condition everywhere). Results are the frozen records of
`persistence.records`; `.to_dict()` gives their JSON form.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from sqlalchemy import Engine

from flowworker.config import Settings
from persistence.database import create_database_engine, transaction
from persistence.errors import InvalidQuery
from persistence.filters import Order, TaskExecutionFilter, parse_order
from persistence.hierarchy import fetch_organization_id
from persistence.queries import (
    DEFAULT_LIMIT,
    fetch_flow_execution,
    fetch_status_history,
    fetch_task_attempts,
    fetch_task_execution,
    fetch_task_executions,
)
from persistence.records import (
    FlowExecutionRecord,
    Page,
    StatusChangeRecord,
    TaskExecutionRecord,
)
from persistence.reports import parse_status
from persistence.status import ExecutionStatus


def parse_id(value: uuid.UUID | str, what: str = "id") -> uuid.UUID:
    """A UUID from a UUID or its text; `InvalidQuery` naming `what` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidQuery(f"{what} must be a UUID, not {value!r}") from None


class History:
    """Read access to one organization's task executions.

    `database_url` and `organization` (a name or an id) default to `Settings.load()`, i.e.
    ``FLOWWORKER_DATABASE_URL`` and ``FLOWWORKER_ORGANIZATION``. Pass `engine` to share one
    you already have (it is then yours to dispose). Nothing touches the database before the
    first query; the organization's id is looked up then, once.
    """

    def __init__(
        self,
        database_url: str | None = None,
        organization: str | None = None,
        *,
        engine: Engine | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.load(
            database_url=database_url, organization=organization
        )
        self._owns_engine = engine is None
        self.engine = engine or create_database_engine(
            self.settings.database_url, json_max_bytes=self.settings.json_max_bytes
        )
        self._organization_id: uuid.UUID | None = None

    def fetch_organization_id(self) -> uuid.UUID:
        """The id of the configured organization (`UnknownOrganization` if there is none)."""
        if self._organization_id is None:
            with transaction(self.engine) as connection:
                self._organization_id = fetch_organization_id(
                    connection, self.settings.organization
                )
        return self._organization_id

    def list_task_executions(
        self,
        *,
        flow_execution_id: uuid.UUID | str | None = None,
        task_name: str | None = None,
        statuses: Iterable[ExecutionStatus | str] = (),
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        updated_after: dt.datetime | None = None,
        updated_before: dt.datetime | None = None,
        celery_task_id: str | None = None,
        include_deleted: bool = False,
        order: Order | str = Order.NEWEST,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> Page:
        """One page of task executions, newest first unless `order="oldest"`.

        Pass the page's `next_cursor` back as `cursor` (with the same filters) for the next.
        """
        query = TaskExecutionFilter(
            flow_execution_id=None
            if flow_execution_id is None
            else parse_id(flow_execution_id, "flow execution id"),
            task_name=task_name,
            # one status alone is a common call: do not split "failed" into letters
            statuses=frozenset(
                parse_status(status)
                for status in ([statuses] if isinstance(statuses, str) else statuses)
            ),
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
            celery_task_id=celery_task_id,
            include_deleted=include_deleted,
            order=parse_order(order),
        )
        organization_id = self.fetch_organization_id()
        with transaction(self.engine, organization_id) as connection:
            return fetch_task_executions(connection, organization_id, query, limit, cursor)

    def iter_task_executions(
        self, *, page_size: int = 500, **filters: Any
    ) -> Iterator[TaskExecutionRecord]:
        """Every matching task execution, fetched a page at a time (one transaction per page,
        so a long loop holds no transaction open). Takes `list_task_executions`' filters."""
        cursor: str | None = None
        while True:
            page = self.list_task_executions(limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_task_execution(self, task_execution_id: uuid.UUID | str) -> TaskExecutionRecord:
        """One task execution, whatever its status (`UnknownTaskExecution` if none)."""
        organization_id = self.fetch_organization_id()
        with transaction(self.engine, organization_id) as connection:
            return fetch_task_execution(
                connection, organization_id, parse_id(task_execution_id, "task execution id")
            )

    def get_attempts(
        self, flow_execution_id: uuid.UUID | str, task_name: str, *, include_deleted: bool = False
    ) -> tuple[TaskExecutionRecord, ...]:
        """Every execution of `task_name` in the flow execution, by `task_execution_idx`."""
        organization_id = self.fetch_organization_id()
        with transaction(self.engine, organization_id) as connection:
            return fetch_task_attempts(
                connection,
                organization_id,
                parse_id(flow_execution_id, "flow execution id"),
                task_name,
                include_deleted=include_deleted,
            )

    def get_flow_execution(
        self, flow_execution_id: uuid.UUID | str, *, include_deleted: bool = False
    ) -> FlowExecutionRecord:
        """A flow execution with its task executions and summary (`UnknownFlowExecution`)."""
        organization_id = self.fetch_organization_id()
        with transaction(self.engine, organization_id) as connection:
            return fetch_flow_execution(
                connection,
                organization_id,
                parse_id(flow_execution_id, "flow execution id"),
                include_deleted=include_deleted,
            )

    def get_status_history(
        self, task_execution_id: uuid.UUID | str
    ) -> tuple[StatusChangeRecord, ...]:
        """Every status the task execution entered, oldest first."""
        organization_id = self.fetch_organization_id()
        with transaction(self.engine, organization_id) as connection:
            return fetch_status_history(
                connection, organization_id, parse_id(task_execution_id, "task execution id")
            )

    def close(self) -> None:
        """Release the engine's connections (only when this object created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["History", "parse_id"]
