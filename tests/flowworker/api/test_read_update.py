"""Reading (GET), updating (PUT) and the flow execution view, against a real server."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.flowworker.api.conftest import MakeTenant, Tenant, report
from tests.flowworker.api.test_create import assert_error_body

pytestmark = pytest.mark.postgres


def post(http: httpx.Client, tenant: Tenant, **fields: object) -> dict[str, object]:
    response = http.post("/task-executions", json=report(tenant, **fields), headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    record: dict[str, object] = response.json()
    return record


def test_read_one_by_id_and_not_another_organizations(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    mine, theirs = make_tenant("acme"), make_tenant("globex")
    record = post(http, mine)
    assert http.get(f"/task-executions/{record['id']}", headers=mine.headers).json() == record
    hidden = http.get(f"/task-executions/{record['id']}", headers=theirs.headers)
    assert_error_body(hidden, 404, "not_found")
    unknown = http.get(f"/task-executions/{uuid.uuid4()}", headers=mine.headers)
    assert_error_body(unknown, 404, "not_found")
    assert http.get("/task-executions/not-a-uuid", headers=mine.headers).status_code == 422


def test_list_filters_and_pages_with_a_cursor(http: httpx.Client, make_tenant: MakeTenant) -> None:
    tenant, other = make_tenant("acme"), make_tenant("globex")
    for idx in range(5):
        post(http, tenant, task_execution_idx=idx, status="running" if idx % 2 else "queued")
    post(http, tenant, task_name="load")
    post(http, other)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"task_name": "extract", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/task-executions", params=params, headers=tenant.headers).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    running = http.get(
        "/task-executions", params={"status": "running"}, headers=tenant.headers
    ).json()
    assert {item["task_execution_idx"] for item in running["items"]} == {1, 3}
    everything = http.get("/task-executions", headers=tenant.headers).json()["items"]
    assert {item["organization_id"] for item in everything} == {str(tenant.organization_id)}
    assert len(everything) == 6


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "bm90LWEtY3Vyc29y"},
        {"limit": 0},
        {"limit": 100_000},
        {"status": "bogus"},
        {"created_after": "2026-01-01T00:00:00"},
        {"created_after": "2026-02-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
        {"task_name": "a\x00b"},
        {"flow_execution_id": "nope"},
    ],
)
def test_bad_list_parameters_are_422(
    http: httpx.Client, make_tenant: MakeTenant, params: dict[str, object]
) -> None:
    tenant = make_tenant()
    response = http.get("/task-executions", params=params, headers=tenant.headers)  # type: ignore[arg-type]
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_put_by_id_by_a_person_sets_modified_by_and_soft_deletes(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    user_id = uuid.uuid4()
    worker = make_tenant()
    person = make_tenant(user_id=user_id)  # same organization, another key
    record = post(http, worker, status="completed", output={"rows": 3})
    response = http.put(
        "/task-executions", json={"id": record["id"], "status": "deleted"}, headers=person.headers
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["id"], updated["status"]) == (record["id"], "deleted")
    assert updated["modified_by"] == str(user_id)
    assert updated["output"] == {"rows": 3}
    listed = http.get("/task-executions", headers=worker.headers).json()["items"]
    assert listed == []
    with_deleted = http.get(
        "/task-executions", params={"include_deleted": True}, headers=worker.headers
    ).json()["items"]
    assert [item["id"] for item in with_deleted] == [record["id"]]


def test_put_by_key_moves_forward_and_refuses_backward(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant(integration="ops-console")
    post(http, tenant, status="running")
    key = {
        "flow_execution_id": str(tenant.flow_execution_id),
        "task_name": "extract",
        "task_execution_idx": 0,
    }
    cancelled = http.put(
        "/task-executions",
        json=key | {"status": "cancelled", "error": {"message": "stopped by hand"}},
        headers=tenant.headers,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["modified_by"] == "ops-console"
    assert cancelled.json()["error"] == {"message": "stopped by hand"}
    back = http.put("/task-executions", json=key | {"status": "queued"}, headers=tenant.headers)
    error = assert_error_body(back, 409, "transition_refused")
    assert "current status is cancelled" in str(error["message"])
    missing = http.put(
        "/task-executions",
        json=key | {"task_execution_idx": 9, "status": "deleted"},
        headers=tenant.headers,
    )
    assert_error_body(missing, 404, "not_found")
    unnamed = http.put("/task-executions", json={"status": "deleted"}, headers=tenant.headers)
    assert unnamed.status_code == 422


def test_put_re_execute_of_an_ad_hoc_workflow_is_409(
    http: httpx.Client, make_tenant: MakeTenant
) -> None:
    tenant = make_tenant()
    record = post(http, tenant, status="failed")
    response = http.put(
        "/task-executions",
        json={"id": record["id"], "status": "stale", "re_execute": True},
        headers=tenant.headers,
    )
    error = assert_error_body(response, 409, "reexecution_refused")
    assert "ad-hoc" in str(error["message"])
    # refused as a whole: the status change was rolled back
    assert (
        http.get(f"/task-executions/{record['id']}", headers=tenant.headers).json()["status"]
        == "failed"
    )


def test_flow_execution_with_its_tasks(http: httpx.Client, make_tenant: MakeTenant) -> None:
    tenant, other = make_tenant("acme"), make_tenant("globex")
    post(http, tenant, status="completed")
    post(http, tenant, task_name="load", status="failed", error={"message": "boom"})
    response = http.get(f"/flow-executions/{tenant.flow_execution_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    flow = response.json()
    assert flow["id"] == str(tenant.flow_execution_id)
    assert sorted(task["task_name"] for task in flow["task_executions"]) == ["extract", "load"]
    assert flow["summary"]["failed_tasks"] == ["load"]
    hidden = http.get(f"/flow-executions/{tenant.flow_execution_id}", headers=other.headers)
    assert_error_body(hidden, 404, "not_found")


def test_health_needs_no_key(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok", "database": "ok"}
