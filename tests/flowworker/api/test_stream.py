"""The WebSocket relays the changes a POST made, to the POSTing organization only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.flowworker.api.conftest import MakeTenant, Tenant, report

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@contextmanager
def open_stream(api_url: str, tenant: Tenant, query: str = "") -> Iterator[ClientConnection]:
    """A stream that is subscribed: every change committed from now on will arrive."""
    url = api_url.replace("http://", "ws://") + "/ws" + query
    with connect(url, additional_headers=tenant.headers, open_timeout=30) as stream:
        subscribed = json.loads(stream.recv(timeout=30))
        assert subscribed["type"] == "subscribed"
        assert subscribed["organization_id"] == str(tenant.organization_id)
        yield stream


def receive(stream: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(stream.recv(timeout=30))
    return message


def test_a_client_receives_the_change_a_post_made(
    api_url: str, http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    with open_stream(api_url, tenant) as stream:
        posted = http.post("/task-executions", json=report(tenant), headers=tenant.headers)
        assert posted.status_code == 201
        message = receive(stream)
    record = posted.json()
    assert message["type"] == "task_execution"
    assert message["id"] == record["id"]
    assert message["organization_id"] == str(tenant.organization_id)
    assert message["flow_execution_id"] == str(tenant.flow_execution_id)
    assert (message["task_name"], message["task_execution_idx"]) == ("extract", 0)
    assert (message["status"], message["version"]) == ("queued", 1)


def test_filters_by_organization_and_flow_execution(
    api_url: str, http: httpx.Client, make_tenant: MakeTenant
) -> None:
    mine, theirs = make_tenant("acme"), make_tenant("globex")
    sibling = make_tenant("acme")  # another flow execution of the same organization
    query = f"?flow_execution_id={mine.flow_execution_id}"
    with open_stream(api_url, mine, query) as stream:
        for tenant in (theirs, sibling, mine):
            response = http.post("/task-executions", json=report(tenant), headers=tenant.headers)
            assert response.status_code == 201
        # published in this order, so the first message to arrive proves the others were dropped
        message = receive(stream)
    assert message["flow_execution_id"] == str(mine.flow_execution_id)


def test_key_in_query_parameter_and_catch_up_since(
    api_url: str, http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    record = http.post("/task-executions", json=report(tenant), headers=tenant.headers).json()
    url = api_url.replace("http://", "ws://") + "/ws"
    since = "2000-01-01T00:00:00Z"
    with connect(f"{url}?api_key={tenant.key}&since={since}", open_timeout=30) as stream:
        assert receive(stream)["type"] == "subscribed"
        caught_up = receive(stream)
    assert (caught_up["id"], caught_up["catch_up"]) == (record["id"], True)


@pytest.mark.parametrize(
    ("query", "headers", "status_code"),
    [
        ("", {}, 401),
        ("", {"Authorization": "Bearer fwk_nope"}, 401),
        (f"?flow_execution_id={uuid.uuid4()}", None, 404),
        ("?flow_execution_id=nope", None, 422),
        ("?since=yesterday", None, 422),
    ],
)
def test_refusals_are_http_answers_with_the_error_body(
    api_url: str,
    make_tenant: MakeTenant,
    http: httpx.Client,
    query: str,
    headers: dict[str, str] | None,
    status_code: int,
) -> None:
    tenant = make_tenant()
    url = api_url.replace("http://", "ws://") + "/ws" + query
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=tenant.headers if headers is None else headers)
    response = refused.value.response
    assert response.status_code == status_code
    body = json.loads(response.body or b"{}")
    assert body["request_id"] == response.headers["X-Request-ID"]
