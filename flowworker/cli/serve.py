"""`flowworker serve`: run the HTTP API with uvicorn."""

from __future__ import annotations

import os

import click

from flowworker.cli.db import database_url_option


@click.command()
@database_url_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes."
)
@click.option("--redis-url", envvar="FLOWWORKER_REDIS_URL", help="Redis for notifications.")
@click.option(
    "--pool-size",
    type=click.IntRange(1, 1000),
    help="Database connections per worker process (default 16).",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    database_url: str | None,
    host: str,
    port: int,
    workers: int,
    redis_url: str | None,
    pool_size: int | None,
    log_level: str,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    # every worker process builds its app from the environment (uvicorn --factory)
    for name, value in (
        ("FLOWWORKER_DATABASE_URL", database_url),
        ("FLOWWORKER_REDIS_URL", redis_url),
        ("FLOWWORKER_API_POOL_SIZE", str(pool_size) if pool_size else None),
    ):
        if value:
            os.environ[name] = value
    uvicorn.run(
        "flowworker.api.app:create_app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
    )
