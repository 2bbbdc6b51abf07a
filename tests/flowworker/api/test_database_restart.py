"""The API's engine does not ping connections on checkout; a database restart must still cost
no request (the pooled connections the server closed are refused at checkout), and while
the database is down the API answers 503, never 500."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from flowworker.api import ApiOptions, create_app
from flowworker.config import Settings
from persistence.api_keys import create_api_key
from persistence.database import create_database_engine, transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.schema import upgrade_database
from tests.flowworker.api.conftest import ServerThread
from tests.pg_cluster import PrivateCluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    try:
        cluster = PrivateCluster()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def post(client: httpx.Client, key: str, flow_execution_id: str, idx: int, status: str) -> int:
    body = {
        "flow_execution_id": flow_execution_id,
        "task_name": "extract",
        "task_execution_idx": idx,
        "status": status,
    }
    answer = client.post("/task-executions", json=body, headers={"Authorization": f"Bearer {key}"})
    return answer.status_code


@pytest.mark.timeout(180)
def test_a_restart_costs_no_request_and_an_outage_answers_503(cluster: PrivateCluster) -> None:
    setup = create_database_engine(cluster.url)
    upgrade_database(setup)
    with transaction(setup) as connection:
        organization_id = ensure_organization(connection, "acme")
        flow_execution_id = str(create_flow_execution(connection, organization_id))
        key = create_api_key(connection, organization_id).plaintext
    setup.dispose()
    # no key cache: every request also checks out a connection to verify its key
    app = create_app(
        Settings(database_url=cluster.url), ApiOptions(pool_size=4, key_cache_seconds=0)
    )
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        # several requests at once, so that the pool holds several connections
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda idx: post(client, key, flow_execution_id, idx, "queued"), range(16))
            )
        assert set(codes) == {201}

        # no request in between: every pooled connection is one the server closed
        cluster.stop()
        cluster.start()
        for idx in range(8):
            assert post(client, key, flow_execution_id, idx, "running") == 200

        cluster.stop()
        assert post(client, key, flow_execution_id, 8, "running") == 503
        cluster.start()
        for idx in range(8, 16):
            assert post(client, key, flow_execution_id, idx, "running") == 200
        read = client.get(
            f"/flow-executions/{flow_execution_id}", headers={"Authorization": f"Bearer {key}"}
        )
        assert read.status_code == 200
        assert {task["status"] for task in read.json()["task_executions"]} == {"running"}
