"""`POST /task-executions` has two ways to write: on PostgreSQL awaited in the event loop
(`persistence.upsert_async`, the default), otherwise in a write thread over the engine
(`ApiOptions(async_writes=False)`, and every SQLite server). Both answer alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, func, select

from flowworker.api import ApiOptions, create_app
from flowworker.config import Settings
from persistence.api_keys import create_api_key
from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution
from tests.conftest import empty_tables
from tests.flowworker.api.conftest import MakeTenant, ServerThread, report
from tests.flowworker.api.test_create import assert_error_body


@pytest.fixture(scope="module")
def threaded_api_url(api_role_url: str) -> Iterator[str]:
    app = create_app(
        Settings(database_url=api_role_url),
        ApiOptions(pool_size=4, key_cache_seconds=0, async_writes=False),
    )
    assert app.state.flowworker.report_writer is None
    with ServerThread(app) as url:
        yield url


@pytest.fixture(params=["event loop", "write thread"])
def client(
    request: pytest.FixtureRequest, http: httpx.Client, pg_engine: Engine
) -> Iterator[httpx.Client]:
    if request.param == "event loop":
        yield http
        return
    url = request.getfixturevalue("threaded_api_url")
    with httpx.Client(base_url=url, timeout=30) as threaded:
        yield threaded


@pytest.mark.postgres
def test_every_answer_of_a_report(
    client: httpx.Client, make_tenant: MakeTenant, pg_engine: Engine
) -> None:
    tenant, other = make_tenant("acme"), make_tenant("other")
    headers = tenant.headers

    def post(status: str, **fields: object) -> httpx.Response:
        return client.post(
            "/task-executions", json=report(tenant, status, **fields), headers=headers
        )

    created = post("queued", input={"n": 2**70})  # beyond orjson's integers: the JSON fallback
    assert created.status_code == 201, created.text
    assert created.json()["input"] == {"n": 2**70}
    assert post("queued").status_code == 200
    running = post("running")
    assert (running.status_code, running.json()["version"]) == (200, 2)
    refused = assert_error_body(post("queued"), 409, "transition_refused")
    assert refused["details"] == {"current_status": "running", "requested_status": "queued"}
    assert running.json()["id"] == created.json()["id"]
    # another organization's flow execution, and one that does not exist: 404, nothing written
    for flow_execution_id in (other.flow_execution_id, uuid.uuid4()):
        body = {**report(tenant), "flow_execution_id": str(flow_execution_id)}
        answer = client.post("/task-executions", json=body, headers=headers)
        assert_error_body(answer, 404, "not_found")
    with pg_engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(TaskExecution)).scalar_one()
    assert count == 1


def test_a_sqlite_server_writes_in_a_thread(sqlite_engine: Engine) -> None:
    """The embedded default: no async writer, the same answers (no row-level security
    there; the organization check is the store's)."""
    empty_tables(sqlite_engine)
    with transaction(sqlite_engine) as connection:
        organization_id = ensure_organization(connection, "acme")
        flow_execution_id = create_flow_execution(connection, organization_id)
        other_flow_execution_id = create_flow_execution(
            connection, ensure_organization(connection, "other")
        )
        key = create_api_key(connection, organization_id).plaintext
    app = create_app(
        Settings(database_url=str(sqlite_engine.url)),
        ApiOptions(key_cache_seconds=0),
        engine=sqlite_engine,
    )
    assert app.state.flowworker.report_writer is None
    headers = {"Authorization": f"Bearer {key}"}

    def body(status: str, flow_execution: uuid.UUID = flow_execution_id) -> dict[str, object]:
        return {
            "flow_execution_id": str(flow_execution),
            "task_name": "extract",
            "task_execution_idx": 0,
            "status": status,
        }

    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        answers = [
            client.post("/task-executions", json=body(status), headers=headers)
            for status in ("queued", "queued", "running")
        ]
        assert [a.status_code for a in answers] == [201, 200, 200]
        assert answers[2].json()["organization_id"] == str(organization_id)
        refused = client.post("/task-executions", json=body("queued"), headers=headers)
        assert_error_body(refused, 409, "transition_refused")
        elsewhere = body("queued", other_flow_execution_id)
        assert_error_body(
            client.post("/task-executions", json=elsewhere, headers=headers), 404, "not_found"
        )
    with sqlite_engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(TaskExecution)).scalar_one()
    assert count == 1
