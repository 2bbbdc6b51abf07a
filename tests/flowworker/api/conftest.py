"""A real API server on loopback: uvicorn in a thread, PostgreSQL through the application role
that `flowworker db grant` makes (so row-level security applies), Redis for notifications
with a channel prefix of this test session's own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from sqlalchemy import Engine, make_url

from flowworker.api import ApiOptions, create_app
from flowworker.config import Settings
from persistence.api_keys import create_api_key
from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from tests.conftest import SESSION_TAG
from tests.servers import REDIS_URL, require

APP_ROLE = f"flowworker_api_{SESSION_TAG}"
CHANNEL_PREFIX = f"flowworker_test_{SESSION_TAG}"


@pytest.fixture(scope="session")
def api_role_url(postgres_url: str, postgres_engine: Engine) -> Iterator[str]:
    """URL of a login role made by `flowworker db grant`: neither superuser nor BYPASSRLS."""
    from flowworker.cli import cli

    outcome = CliRunner().invoke(cli, ["db", "grant", APP_ROLE, "--database-url", postgres_url])
    assert outcome.exit_code == 0, outcome.output
    try:
        yield make_url(postgres_url).set(username=APP_ROLE).render_as_string(False)
    finally:
        with postgres_engine.begin() as connection:
            connection.exec_driver_sql(f"DROP OWNED BY {APP_ROLE}")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {APP_ROLE}")


class ServerThread:
    """uvicorn serving `app` on a free loopback port, in a daemon thread."""

    def __init__(self, app: object) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="auto")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def api_url(api_role_url: str) -> Iterator[str]:
    require("Redis", REDIS_URL, 6379)
    settings = Settings(
        database_url=api_role_url, redis_url=REDIS_URL, channel_prefix=CHANNEL_PREFIX
    )
    # no key cache: a test that revokes a key sees the effect at once
    app = create_app(settings, ApiOptions(pool_size=8, key_cache_seconds=0))
    with ServerThread(app) as url:
        yield url


@pytest.fixture
def http(api_url: str, pg_engine: Engine) -> Iterator[httpx.Client]:
    """A client of the server; the tables start empty (`pg_engine` empties them)."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


@dataclass
class Tenant:
    organization_id: uuid.UUID
    key: str
    flow_execution_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeTenant = Callable[..., Tenant]


@pytest.fixture
def make_tenant(pg_engine: Engine) -> MakeTenant:
    """An organization with a flow execution and an API key (as the owner: no RLS here)."""

    def make(
        name: str = "acme",
        *,
        user_id: uuid.UUID | None = None,
        integration: str | None = None,
        flow_id: uuid.UUID | None = None,
    ) -> Tenant:
        with transaction(pg_engine) as connection:
            organization_id = ensure_organization(connection, name)
            flow_execution_id = create_flow_execution(connection, organization_id, flow_id=flow_id)
            key = create_api_key(
                connection, organization_id, user_id=user_id, integration=integration
            )
        return Tenant(organization_id, key.plaintext, flow_execution_id)

    return make


def report(tenant: Tenant, status: str = "queued", **fields: object) -> dict[str, object]:
    """A POST body for `tenant`'s flow execution."""
    return {
        "flow_execution_id": str(tenant.flow_execution_id),
        "task_name": "extract",
        "task_execution_idx": 0,
        "status": status,
        **fields,
    }
