"""The ASGI application: `create_app(settings)`, or `create_app_from_environment()` for
`uvicorn --factory` (what `flowworker serve` runs in each worker process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from fastapi import FastAPI
from sqlalchemy import Engine

from flowworker.api.auth import KeyVerifier
from flowworker.api.errors import install_error_handlers
from flowworker.api.request_id import RequestIdMiddleware
from flowworker.api.routes import flow_executions, health, stream, task_executions
from flowworker.api.state import DEFAULT_WRITE_THREADS, ApiState, ChangePublisher
from flowworker.config import Settings
from flowworker.notify import StatusNotifier
from persistence.database import create_database_engine

DEFAULT_POOL_SIZE = 16


@dataclass(frozen=True, slots=True)
class ApiOptions:
    #: database connections per server process; requests beyond it wait for one
    pool_size: int = DEFAULT_POOL_SIZE
    #: how long a verified API key is trusted without asking the database again
    key_cache_seconds: float = 5.0
    #: mount `POST /_bench/bare` (no database work), the benchmark's baseline
    bare_endpoint: bool = False
    #: PostgreSQL: `POST /task-executions` awaits its one statement in the event loop
    #: (`persistence.upsert_async`, `write_threads` connections of its own) instead of
    #: holding a thread
    async_writes: bool = True
    #: connections of the async writer, or else threads per process that write reports.
    #: Few: a write holds its connection about half a millisecond, and many threads wanting
    #: the GIL at once make each one wait longer for it (bench/README.md, `## http`)
    write_threads: int = DEFAULT_WRITE_THREADS


def create_app(
    settings: Settings | None = None,
    options: ApiOptions | None = None,
    *,
    engine: Engine | None = None,
    notifier: ChangePublisher | None = None,
) -> FastAPI:
    """The HTTP API over `settings.database_url`, notifying on `settings.redis_url` (if set).

    `engine` and `notifier`, when given, are used as they are and left open at shutdown.
    """
    settings = settings or Settings.load()
    options = options or ApiOptions()
    owns_engine = engine is None
    # no ping per checkout: a round trip per request; a connection the server closed is
    # still refused at checkout (see `persistence.database.create_database_engine`)
    engine = engine or create_database_engine(
        settings.database_url,
        json_max_bytes=settings.json_max_bytes,
        pool_size=options.pool_size,
        pool_pre_ping=False,
    )
    owns_notifier = notifier is None and settings.redis_url is not None
    if owns_notifier and settings.redis_url is not None:
        notifier = StatusNotifier(settings.redis_url, settings.channel_prefix)
    state = ApiState(
        settings=settings,
        engine=engine,
        key_verifier=KeyVerifier(engine, options.key_cache_seconds),
        notifier=notifier,
        write_threads=anyio.CapacityLimiter(options.write_threads),
    )
    if options.async_writes and engine.dialect.name == "postgresql":
        from persistence.upsert_async import AsyncReportWriter

        state.report_writer = AsyncReportWriter(
            engine.url.render_as_string(hide_password=False),
            size=options.write_threads,
            json_max_bytes=settings.json_max_bytes,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if state.report_writer is not None:
            await state.report_writer.close()
        if owns_notifier and state.notifier is not None:
            state.notifier.close()
        if owns_engine:
            state.engine.dispose()

    app = FastAPI(
        title="flowworker",
        summary="The history of every Celery task execution, and its live status.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.flowworker = state
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    for router in (
        task_executions.router,
        flow_executions.router,
        health.router,
        stream.router,
    ):
        app.include_router(router)
    if options.bare_endpoint:
        app.include_router(health.bare_router)
    return app


def create_app_from_environment() -> FastAPI:
    """Settings from `FLOWWORKER_*` variables; `FLOWWORKER_API_BARE_ENDPOINT=1` mounts the
    benchmark's baseline endpoint, `FLOWWORKER_API_POOL_SIZE` sizes the pool and
    `FLOWWORKER_API_WRITE_THREADS` the writers, `FLOWWORKER_API_ASYNC_WRITES=0` writes in
    threads."""
    import os

    options = ApiOptions(
        pool_size=int(os.environ.get("FLOWWORKER_API_POOL_SIZE", DEFAULT_POOL_SIZE)),
        write_threads=int(os.environ.get("FLOWWORKER_API_WRITE_THREADS", DEFAULT_WRITE_THREADS)),
        async_writes=os.environ.get("FLOWWORKER_API_ASYNC_WRITES", "1") != "0",
        bare_endpoint=os.environ.get("FLOWWORKER_API_BARE_ENDPOINT") == "1",
    )
    return create_app(Settings.load(), options)
