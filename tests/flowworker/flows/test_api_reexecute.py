"""`PUT /task-executions` with `re_execute: true` re-executes a flow through the flow engine,
and the store's task-list rule answers the HTTP API too."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from flowworker.api import create_app
from flowworker.config import Settings
from persistence.api_keys import create_api_key
from persistence.database import transaction
from tests.flowworker.flows.conftest import Flows

FLOW = """
tasks:
  - name: first
    task: tasks.echo
    input: {value: 1}
  - name: second
    task: tasks.echo
    input: {value: "{{first.output}}"}
"""


@pytest.fixture
def client(flows: Flows) -> Iterator[httpx.Client]:
    """The HTTP API served by uvicorn on a free loopback port, in a thread."""
    organization_id = flows.runner.fetch_organization_id()
    with transaction(flows.engine) as connection:
        key = create_api_key(connection, organization_id, integration="tests")
    app = create_app(
        Settings(database_url=flows.engine.url.render_as_string(hide_password=False)),
        engine=flows.engine,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the API server stopped"
        assert time.monotonic() < deadline, "the API did not start within 30s"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    headers = {"Authorization": f"Bearer {key.plaintext}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_put_with_re_execute_runs_the_task_and_its_downstream_again(
    flows: Flows, client: httpx.Client
) -> None:
    flow_execution_id = flows.run(FLOW)
    assert flows.wait_finished(flow_execution_id) == "completed"
    [first] = flows.records(flow_execution_id, task_name="first")
    response = client.put("/task-executions", json={"id": str(first.id), "re_execute": True})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stale"
    assert response.json()["modified_by"] == "tests"
    assert flows.wait_finished(flow_execution_id) == "completed"
    records = flows.by_task(flow_execution_id)
    assert [(r.task_execution_idx, r.status) for r in records["first"]] == [
        (0, "stale"),
        (1, "completed"),
    ]
    assert [(r.task_execution_idx, r.status, r.output) for r in records["second"]] == [
        (0, "stale", 1),
        (1, "completed", 1),
    ]


def test_post_of_a_task_name_outside_the_flow_is_refused(
    flows: Flows, client: httpx.Client
) -> None:
    flow_execution_id = flows.run(FLOW)
    response = client.post(
        "/task-executions",
        json={
            "flow_execution_id": str(flow_execution_id),
            "task_name": "third",
            "task_execution_idx": 0,
            "status": "queued",
        },
    )
    assert response.status_code in (400, 422), response.text
    assert "'third' is not a task of the flow" in response.text
    flows.wait_finished(flow_execution_id)
    assert uuid.UUID(str(flow_execution_id))
