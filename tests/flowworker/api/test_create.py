"""`POST /task-executions` against a real server: every status code the spec names."""

from __future__ import annotations

import uuid

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from flowworker.cli import cli
from persistence.models import TaskExecution
from tests.flowworker.api.conftest import MakeTenant, report

pytestmark = pytest.mark.postgres

RECORD_FIELDS = {
    "id",
    "organization_id",
    "flow_execution_id",
    "task_name",
    "task_execution_idx",
    "status",
    "input",
    "output",
    "error",
    "modified_by",
    "created_at",
    "updated_at",
    "celery_task_id",
    "attempt",
    "worker",
    "queued_at",
    "started_at",
    "finished_at",
    "version",
}


def assert_error_body(response: httpx.Response, status_code: int, code: str) -> dict[str, object]:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    error: dict[str, object] = body["error"]
    return error


def test_first_report_creates_the_full_record(http: httpx.Client, make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    response = http.post(
        "/task-executions", json=report(tenant, input={"n": 1}), headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    record = response.json()
    assert set(record) == RECORD_FIELDS
    assert record["organization_id"] == str(tenant.organization_id)
    assert record["flow_execution_id"] == str(tenant.flow_execution_id)
    assert (record["task_name"], record["task_execution_idx"]) == ("extract", 0)
    assert record["status"] == "queued"
    assert record["input"] == {"n": 1}
    assert record["modified_by"] == "system"
    assert record["version"] == 1
    uuid.UUID(record["id"])


def test_repeating_a_report_updates_the_same_record(
    http: httpx.Client, make_tenant: MakeTenant, pg_engine: Engine
) -> None:
    tenant = make_tenant()
    created = http.post("/task-executions", json=report(tenant), headers=tenant.headers)
    running = http.post("/task-executions", json=report(tenant, "running"), headers=tenant.headers)
    done = http.post(
        "/task-executions", json=report(tenant, "completed", output=[1, 2]), headers=tenant.headers
    )
    again = http.post("/task-executions", json=report(tenant, "completed"), headers=tenant.headers)
    assert [r.status_code for r in (created, running, done, again)] == [201, 200, 200, 200]
    ids = {r.json()["id"] for r in (created, running, done, again)}
    assert len(ids) == 1
    assert done.json()["output"] == [1, 2]
    assert again.json()["version"] == done.json()["version"] == 3
    with pg_engine.connect() as connection:
        rows = connection.execute(select(TaskExecution.id, TaskExecution.status)).all()
    assert [(str(row.id), row.status) for row in rows] == [(ids.pop(), "completed")]


def test_refused_transition_is_409_naming_the_current_status(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    http.post("/task-executions", json=report(tenant, "completed"), headers=tenant.headers)
    response = http.post("/task-executions", json=report(tenant, "running"), headers=tenant.headers)
    error = assert_error_body(response, 409, "transition_refused")
    assert "current status is completed" in str(error["message"])
    assert error["details"] == {"current_status": "completed", "requested_status": "running"}


@pytest.mark.parametrize("status", ["bogus", "deleted", "stale", "", 3, None])
def test_invalid_status_is_400(http: httpx.Client, make_tenant: MakeTenant, status: object) -> None:
    tenant = make_tenant()
    response = http.post("/task-executions", json=report(tenant, status), headers=tenant.headers)  # type: ignore[arg-type]
    error = assert_error_body(response, 400, "bad_request")
    assert "invalid status" in str(error["message"])


@pytest.mark.parametrize(
    "missing", ["flow_execution_id", "task_name", "task_execution_idx", "status"]
)
def test_missing_required_field_is_400(
    http: httpx.Client, make_tenant: MakeTenant, missing: str
) -> None:
    tenant = make_tenant()
    body = report(tenant)
    del body[missing]
    response = http.post("/task-executions", json=body, headers=tenant.headers)
    error = assert_error_body(response, 400, "bad_request")
    assert missing in str(error["message"])


def test_unknown_flow_execution_is_404(http: httpx.Client, make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    body = report(tenant) | {"flow_execution_id": str(uuid.uuid4())}
    response = http.post("/task-executions", json=body, headers=tenant.headers)
    assert_error_body(response, 404, "not_found")


def test_another_organizations_flow_execution_is_404_and_untouched(
    http: httpx.Client, make_tenant: MakeTenant, pg_engine: Engine
) -> None:
    mine, theirs = make_tenant("acme"), make_tenant("globex")
    body = report(theirs)
    response = http.post("/task-executions", json=body, headers=mine.headers)
    assert_error_body(response, 404, "not_found")
    with pg_engine.connect() as connection:
        assert connection.execute(select(TaskExecution.id)).all() == []


@pytest.mark.parametrize(
    ("changes", "location"),
    [
        ({"task_name": ""}, "task_name"),
        ({"task_name": "x" * 201}, "task_name"),
        ({"task_name": "a\x00b"}, "task_name"),
        ({"task_name": 7}, "task_name"),
        ({"task_execution_idx": -1}, "task_execution_idx"),
        ({"task_execution_idx": 2**31}, "task_execution_idx"),
        ({"task_execution_idx": 10**400}, "task_execution_idx"),
        ({"task_execution_idx": "0"}, "task_execution_idx"),
        ({"task_execution_idx": 1.5}, "task_execution_idx"),
        ({"task_execution_idx": True}, "task_execution_idx"),
        ({"flow_execution_id": "not-a-uuid"}, "flow_execution_id"),
        ({"flow_execution_id": 12}, "flow_execution_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_validation_errors_are_422_with_a_detail_array(
    http: httpx.Client, make_tenant: MakeTenant, changes: dict[str, object], location: str
) -> None:
    tenant = make_tenant()
    body = report(tenant) | changes
    response = http.post("/task-executions", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(item["loc"] == ["body", location] for item in detail), detail
    assert all({"loc", "msg", "type"} <= set(item) for item in detail)
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[]",
        b"null",
        b'"a string"',
        b'{"task_name": "\\ud800"}',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"input": ' + b"9" * 10_000 + b"}",
    ],
)
def test_malformed_bodies_are_client_errors_never_500(
    http: httpx.Client, make_tenant: MakeTenant, content: bytes
) -> None:
    tenant = make_tenant()
    response = http.post(
        "/task-executions",
        content=content,
        headers=tenant.headers | {"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "value",
    [
        "nul \x00 inside",
        {"key\x00": ["\x00"]},
        10**300,
        -(10**300),
        1e308,
        {"deep": [[[[[[[[[[{"x": None}]]]]]]]]]]},
        "𝄞 astral and \u200b zero-width",
    ],
)
def test_odd_json_values_are_stored_not_500(
    http: httpx.Client, make_tenant: MakeTenant, value: object
) -> None:
    tenant = make_tenant()
    response = http.post(
        "/task-executions", json=report(tenant, input=value), headers=tenant.headers
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_stored_as_strings(
    http: httpx.Client, make_tenant: MakeTenant, token: bytes
) -> None:
    tenant = make_tenant()
    content = httpx.Request("POST", "/", json=report(tenant)).content[:-1] + b', "input": '
    response = http.post(
        "/task-executions",
        content=content + token + b"}",
        headers=tenant.headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["input"] in ("NaN", "Infinity", "-Infinity")


def test_unpaired_surrogates_in_json_values_are_422(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    body = report(tenant)
    content = httpx.Request("POST", "/", json=body).content[:-1] + b', "input": "\\udc80"}'
    response = http.post(
        "/task-executions",
        content=content,
        headers=tenant.headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "input"]


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz", "fwk_" + "0" * 80]
)
def test_requests_without_a_valid_key_are_401(
    http: httpx.Client, make_tenant: MakeTenant, authorization: str | None
) -> None:
    tenant = make_tenant()
    headers = {} if authorization is None else {"Authorization": authorization}
    response = http.post("/task-executions", json=report(tenant), headers=headers)
    assert_error_body(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_bare_key_in_the_authorization_header_is_accepted(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    response = http.post(
        "/task-executions", json=report(tenant), headers={"Authorization": tenant.key}
    )
    assert response.status_code == 201


def test_a_revoked_key_is_401(
    http: httpx.Client, make_tenant: MakeTenant, postgres_url: str
) -> None:
    tenant = make_tenant()
    assert http.get("/task-executions", headers=tenant.headers).status_code == 200
    key_id = str(uuid.UUID(tenant.key.split("_")[1]))
    outcome = CliRunner().invoke(cli, ["keys", "revoke", key_id, "--database-url", postgres_url])
    assert outcome.exit_code == 0, outcome.output
    response = http.get("/task-executions", headers=tenant.headers)
    assert_error_body(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (
            {"user_id": uuid.UUID("123e4567-e89b-12d3-a456-426614174000")},
            "123e4567-e89b-12d3-a456-426614174000",
        ),
        ({"integration": "service-account"}, "service-account"),
        ({}, "system"),
    ],
)
def test_modified_by_is_the_keys_principal(
    http: httpx.Client, make_tenant: MakeTenant, principal: dict[str, object], expected: str
) -> None:
    tenant = make_tenant(**principal)
    response = http.post("/task-executions", json=report(tenant), headers=tenant.headers)
    assert response.json()["modified_by"] == expected


def test_every_response_carries_a_request_id_and_echoes_a_sane_one(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    mine = http.get("/health", headers={"X-Request-ID": "trace-42"})
    assert mine.headers["X-Request-ID"] == "trace-42"
    insane = http.get("/health", headers={"X-Request-ID": "a b\tc"})
    assert insane.headers["X-Request-ID"] != "a b\tc"
    for response in (
        http.get("/no-such-route"),
        http.delete("/task-executions"),
        http.post("/task-executions", json={}, headers=tenant.headers),
    ):
        assert response.headers["X-Request-ID"]
    not_found = http.get("/no-such-route")
    assert_error_body(not_found, 404, "not_found")
