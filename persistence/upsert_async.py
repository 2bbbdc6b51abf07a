"""One report, one round trip, without a thread: the session function of
`persistence.upsert_function` over psycopg's asyncio connections (PostgreSQL).

For an asyncio server that writes single reports (the HTTP API's `POST /task-executions`):
the write waits for PostgreSQL in the event loop instead of in a worker thread, so it takes
no thread hop and no turn at the GIL among other threads. `AsyncReportWriter` keeps a few
autocommit connections of its own, each with the function created on first use; the
outcomes, errors and row-level security are those of
`upsert_task_execution_record(connection, report, organization_id=...)`.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from persistence.database import normalize_url, server_closed
from persistence.jsonvalue import DEFAULT_MAX_BYTES, encode_json
from persistence.records import TaskExecutionRecord
from persistence.reports import TaskReport, UpsertResult, utcnow
from persistence.upsert import record_of, result_of_function
from persistence.upsert_function import (
    upsert_function_arguments,
    upsert_function_call,
    upsert_function_ddl,
    upsert_function_row,
)

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


class AsyncReportWriter:
    """Up to `size` connections to the database at `url`, opened when first needed, each
    with a cursor kept for its calls; a connection the server closed (a restart) is replaced
    before use, without a round trip (`persistence.database.server_closed`)."""

    def __init__(self, url: str, *, size: int = 4, json_max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._conninfo = (
            make_url(normalize_url(url))
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._serialize: Callable[[Any], str] = functools.partial(
            encode_json, max_bytes=json_max_bytes
        )
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]]] = []
        self._call = upsert_function_call(_DIALECT, True)

    async def upsert_task_execution_record(
        self, report: TaskReport, organization_id: uuid.UUID
    ) -> tuple[UpsertResult, TaskExecutionRecord]:
        """Apply `report` within `organization_id`: its result and the record afterwards."""
        async with self._slots:
            connection, cursor = await self._checkout()
            returned = False
            try:
                written_at = utcnow()
                await cursor.execute(
                    self._call,
                    upsert_function_arguments(report, written_at, organization_id, self._serialize),
                )
                row, flow_known = upsert_function_row(await cursor.fetchone(), True)
                self._idle.append((connection, cursor))
                returned = True
            finally:
                if not returned:
                    # an error or a cancellation mid-statement: its state is unknown
                    await connection.close()
        result = result_of_function(report, written_at, row, flow_known)
        return result, record_of(row)

    async def _checkout(self) -> tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]]:
        while self._idle:
            connection, cursor = self._idle.pop()
            if not server_closed(connection):
                return connection, cursor
            await connection.close()
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await connection.execute(upsert_function_ddl(_DIALECT, True))
        except BaseException:
            await connection.close()
            raise
        return connection, connection.cursor()

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop()[0].close()
