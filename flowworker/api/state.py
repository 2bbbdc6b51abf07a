"""What the app's routes share: settings, the engine, the key verifier, the notifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio
from fastapi import Request
from sqlalchemy import Engine

from flowworker.api.auth import KeyVerifier
from flowworker.config import Settings
from persistence.reports import UpsertResult

if TYPE_CHECKING:  # imports psycopg, which a SQLite-only installation lacks
    from persistence.upsert_async import AsyncReportWriter

DEFAULT_WRITE_THREADS = 4


class ChangePublisher(Protocol):
    """`flowworker.notify.StatusNotifier`: queues and returns, never blocks on Redis."""

    def publish_changes(self, results: Sequence[UpsertResult]) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    key_verifier: KeyVerifier
    notifier: ChangePublisher | None
    #: threads a WebSocket may hold waiting on Redis; separate from the request threads
    stream_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(64))
    #: writes `POST /task-executions` without a thread (PostgreSQL), see `ApiOptions`
    report_writer: AsyncReportWriter | None = None
    #: threads that write reports when there is no `report_writer`: a few, see `ApiOptions`
    write_threads: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(DEFAULT_WRITE_THREADS)
    )

    def publish_changes(self, results: Sequence[UpsertResult]) -> None:
        """Hand accepted changes to the notifier (after the commit; never raises)."""
        changed = [result for result in results if result.changed]
        if changed and self.notifier is not None:
            self.notifier.publish_changes(changed)


async def api_state(request: Request) -> ApiState:
    # async: FastAPI runs a sync dependency in the thread pool, a thread hop per request
    state: ApiState = request.app.state.flowworker
    return state
