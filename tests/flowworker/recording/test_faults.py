"""What happens to the records when tasks are revoked, terminated, killed, redelivered, and
when the database goes away in the middle of a run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from persistence.database import create_database_engine
from persistence.schema import upgrade_database
from tests.flowworker.celery_app import (
    acks_late_sleep,
    add,
    fan_out_then_mark,
    sleep,
    wait_for_file,
)
from tests.flowworker.recording.conftest import Recording
from tests.flowworker.workers import wait_until
from tests.pg_cluster import PrivateCluster


@pytest.fixture(scope="module")
def recording(recording_factory: Any) -> Iterator[Recording]:
    recording: Recording = recording_factory()
    recording.start_worker(pool="prefork", concurrency=2)
    yield recording
    recording.stop()


@contextmanager
def private_database(recording_factory: Any) -> Iterator[tuple[PrivateCluster, Recording]]:
    """A recording whose database is a private PostgreSQL the test may stop or freeze, with
    one prefork worker; everything is torn down afterwards."""
    cluster = PrivateCluster()
    try:
        cluster.start()
        engine = create_database_engine(cluster.url)
        upgrade_database(engine)
        recording: Recording = recording_factory(database_url=cluster.url, engine=engine)
        recording.start_worker(pool="prefork", concurrency=2)
        yield cluster, recording
        recording.stop()
        engine.dispose()
    finally:
        cluster.destroy()


def started_pid(path: Path, timeout: float = 30.0) -> int:
    marker = Path(str(path) + ".started")
    wait_until(lambda: marker.exists() and marker.read_text(), timeout)
    return int(marker.read_text())


def test_revoked_before_start_is_cancelled(recording: Recording) -> None:
    result = add.apply_async((1, 2), countdown=3)
    recording.wait_for(1, {"queued"}, celery_task_id=result.id)
    recording.app.control.revoke(result.id)
    [record] = recording.wait_for(1, {"cancelled"}, celery_task_id=result.id)
    assert record.error["type"] == "Revoked"
    assert record.output is None


def test_terminated_while_running_is_cancelled(recording: Recording, tmp_path: Path) -> None:
    result = wait_for_file.delay(str(tmp_path / "never"))
    started_pid(tmp_path / "never")
    recording.wait_for(1, {"running"}, celery_task_id=result.id)
    recording.app.control.revoke(result.id, terminate=True, signal="SIGTERM")
    [record] = recording.wait_for(1, {"cancelled"}, celery_task_id=result.id)
    assert "terminated" in record.error["message"]
    assert recording.history(record.id) == ["queued", "running", "cancelled"]


def test_killed_pool_child_is_recorded_failed_with_the_worker_lost_error(
    recording: Recording, tmp_path: Path
) -> None:
    result = wait_for_file.delay(str(tmp_path / "never"))
    pid = started_pid(tmp_path / "never")
    recording.wait_for(1, {"running"}, celery_task_id=result.id)
    os.kill(pid, signal.SIGKILL)
    [record] = recording.wait_for(1, {"failed"}, celery_task_id=result.id)
    assert record.error["type"] == "WorkerLostError"
    # the pool replaced the child; the worker goes on recording
    after = add.delay(1, 1)
    recording.wait_for(1, {"completed"}, celery_task_id=after.id)


def test_redelivered_message_finishes_the_same_record(recording: Recording, tmp_path: Path) -> None:
    result = acks_late_sleep.delay(str(tmp_path / "marker"))
    pid = started_pid(tmp_path / "marker")
    recording.wait_for(1, {"running"}, celery_task_id=result.id)
    os.kill(pid, signal.SIGKILL)  # acks_late + reject_on_worker_lost: the message goes back
    records = recording.wait_for(1, {"completed"}, celery_task_id=result.id)
    assert len(records) == 1
    assert records[0].output == "finished on redelivery"
    assert records[0].task_execution_idx == 0


def test_a_killed_writer_process_is_replaced_and_loses_no_record(recording: Recording) -> None:
    [worker] = recording.workers
    first = wait_until(worker.writer_pid, 30)
    results = [sleep.delay(0.01) for _ in range(100)]
    wait_until(lambda: len(recording.records(status="completed")) >= 10, 60)
    os.kill(first, signal.SIGKILL)  # in the middle of the run
    ids = {r.id for r in results}

    def all_completed() -> bool:
        return ids <= {r.celery_task_id for r in recording.records(status="completed")}

    wait_until(all_completed, 120)
    second = worker.writer_pid()
    assert second is not None
    assert second != first
    assert "starting another" in worker.log.read_text()


def test_database_stopped_for_20_seconds_loses_no_record(recording_factory: Any) -> None:
    with private_database(recording_factory) as (cluster, recording):
        [worker] = recording.workers
        results = [sleep.delay(0.05) for _ in range(200)]
        wait_until(lambda: len(recording.records(status="completed")) >= 30, 120)
        cluster.stop()
        stopped_at = time.monotonic()
        time.sleep(20)
        cluster.start()
        outage_seconds = time.monotonic() - stopped_at
        rows = recording.wait_for(200, {"completed"}, timeout=180)
        assert outage_seconds >= 20
        assert {r.celery_task_id for r in rows} == {r.id for r in results}
        assert all(r.task_execution_idx == 0 for r in rows)
        # the tasks ran on during the outage: the worker never stopped
        assert worker.process.poll() is None
        assert "WorkerLostError" not in worker.log.read_text()


def test_every_record_of_the_outage_has_a_clean_history(recording_factory: Any) -> None:
    """Reports replayed from the journal keep their order: queued, running, completed."""
    with private_database(recording_factory) as (cluster, recording):
        cluster.stop()
        results = [add.delay(n, 1) for n in range(20)]
        time.sleep(5)
        cluster.start()
        rows = recording.wait_for(20, {"completed"}, timeout=120)
        assert {r.celery_task_id for r in rows} == {r.id for r in results}
        for row in rows:
            assert recording.history(row.id) == ["queued", "running", "completed"]


def test_a_frozen_database_does_not_hang_a_task_that_publishes_children(
    recording_factory: Any, tmp_path: Path
) -> None:
    """Children need an idx from the database; when it does not answer (SIGSTOP: nothing is
    refused, everything waits), the publishing task goes on and the children are resolved
    by the worker once the database is back."""
    with private_database(recording_factory) as (cluster, recording):
        warm_up = add.delay(0, 0)
        recording.wait_for(1, {"completed"}, celery_task_id=warm_up.id)
        mark = tmp_path / "published"
        cluster.freeze()
        try:
            result = fan_out_then_mark.delay(3, str(mark))
            wait_until(mark.exists, timeout=30)  # the task finished with the database frozen
        finally:
            cluster.thaw()
        parent = recording.wait_for(1, {"completed"}, timeout=120, celery_task_id=result.id)
        children = recording.wait_for(
            3,
            {"completed"},
            timeout=120,
            flow_execution_id=parent[0].flow_execution_id,
            task_name="tests.add",
        )
        # distinct, though not necessarily 0..2: the allocation that timed out may complete
        # once the database thaws and take an idx nobody uses
        assert len({r.task_execution_idx for r in children}) == 3
