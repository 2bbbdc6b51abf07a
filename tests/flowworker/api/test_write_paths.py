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
from persistence.models import TaskExecution
from tests.flowworker.api.conftest import MakeTenant, ServerThread, report
from tests.flowworker.api.test_create import assert_error_body

pytestmark = pytest.mark.postgres


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
