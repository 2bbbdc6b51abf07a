"""A real Flower, started by `flowworker flower`, sees our tasks as the database does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.flowworker.celery_app import add, fail
from tests.flowworker.recording.conftest import ROOT, Recording
from tests.flowworker.workers import wait_until
from tests.pg_cluster import free_port

#: Flower's state for each final record status
FLOWER_STATE = {"completed": "SUCCESS", "failed": "FAILURE"}


@pytest.fixture(scope="module")
def recording(recording_factory: Any) -> Recording:
    recording: Recording = recording_factory()
    return recording


@pytest.fixture(scope="module")
def flower_url(recording: Recording) -> Iterator[str]:
    port = free_port()
    log = (recording.tmp / "flower.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from flowworker.cli import main; main()",
            "flower",
            "--app",
            "tests.flowworker.celery_app:app",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        cwd=ROOT,
        env={**recording.env, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError((recording.tmp / "flower.log").read_text()[-3000:])
        try:
            return httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=60)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(20)
    log.close()


def _wait_until_flower_sees_events(flower_url: str) -> None:
    """Flower switches task events on in workers started after it (every few seconds):
    until then a task leaves no trace in Flower."""

    def probe_seen() -> bool:
        probe = add.delay(0, 0)
        try:
            return bool(wait_until(lambda: _flower_state(flower_url, probe.id), timeout=3))
        except TimeoutError:
            return False

    wait_until(probe_seen, timeout=60)


def _flower_state(flower_url: str, task_id: str) -> str | None:
    listed = httpx.get(f"{flower_url}/api/tasks", timeout=5).json()
    task = listed.get(task_id)
    return None if task is None else str(task["state"])


def test_flower_lists_our_tasks_with_the_states_of_their_records(
    recording: Recording, flower_url: str
) -> None:
    recording.start_worker(concurrency=2, name="flower")
    _wait_until_flower_sees_events(flower_url)
    results = [add.delay(n, 1) for n in range(5)] + [fail.delay("no") for _ in range(3)]
    ids = {result.id for result in results}
    for result in results:
        recording.wait_for(1, {"completed", "failed"}, celery_task_id=result.id)
    records = {r.celery_task_id: r for r in recording.records() if r.celery_task_id in ids}
    assert len(records) == 8

    def flower_agrees() -> dict[str, Any] | None:
        listed = httpx.get(f"{flower_url}/api/tasks", timeout=5).json()
        done = {
            task_id: task
            for task_id, task in listed.items()
            if task_id in ids and task["state"] in ("SUCCESS", "FAILURE")
        }
        return listed if len(done) == len(ids) else None

    listed: Any = wait_until(flower_agrees, timeout=60)
    for task_id, record in records.items():
        assert listed[task_id]["state"] == FLOWER_STATE[record.status], task_id
        assert listed[task_id]["name"] == record.task_name


def test_flower_task_views_show_the_flow_execution_and_idx(
    recording: Recording, flower_url: str
) -> None:
    result = add.delay(20, 22)
    [record] = recording.wait_for(1, {"completed"}, flow_execution_id=uuid.UUID(result.id))
    label = f"[#{record.task_execution_idx} · flow execution {record.flow_execution_id}]"

    def page() -> str | None:
        response = httpx.get(f"{flower_url}/task/{result.id}", timeout=5)
        return response.text if response.status_code == 200 else None

    html: Any = wait_until(page, timeout=30)
    assert label in html
    table = httpx.get(
        f"{flower_url}/tasks/datatable",
        params={
            "draw": 1,
            "start": 0,
            "length": 100,
            "search[value]": result.id,
            "order[0][column]": 0,
            "columns[0][data]": "name",
            "order[0][dir]": "asc",
        },
        timeout=5,
    ).json()
    [row] = [row for row in table["data"] if row["uuid"] == result.id]
    assert row["name"] == f"tests.add {label}"
