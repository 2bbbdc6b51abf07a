"""The reaper fails the runs of a worker that died, never a live one, never a finished one."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner

from flowworker.cli import cli
from flowworker.reaper import (
    REAP_TASK_NAME,
    LiveWorkers,
    StaleRun,
    WorkersUnreachable,
    _failure_report,
    fetch_live_workers,
    judge,
    reap_stale_runs,
)
from persistence.database import transaction
from persistence.reports import UpsertOutcome
from persistence.retention import RunningRecord
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_execution
from tests.flowworker.celery_app import wait_for_file
from tests.flowworker.recording.conftest import Recording
from tests.flowworker.workers import wait_until
from tests.pg_cluster import free_port

APP = "tests.flowworker.celery_app:app"


@pytest.fixture(scope="module")
def worlds(recording_factory: Any) -> tuple[Recording, Recording]:
    """Two queues with one worker each (both made through the one test app)."""
    return recording_factory(), recording_factory()


def _start_long_task(recording: Recording, marker: Path) -> Any:
    result = wait_for_file.apply_async((str(marker), 120.0), queue=recording.env["FW_TEST_QUEUE"])
    wait_until(lambda: Path(str(marker) + ".started").exists(), 60)
    recording.wait_for(1, {"running"}, celery_task_id=result.id)
    return result


def test_dead_worker_runs_are_reaped_and_live_ones_spared(
    worlds: tuple[Recording, Recording],
) -> None:
    live_world, dead_world = worlds
    live_world.start_worker(concurrency=1, name="alive")
    doomed = dead_world.start_worker(concurrency=1, name="doomed")
    live = _start_long_task(live_world, live_world.tmp / "live")
    lost = _start_long_task(dead_world, dead_world.tmp / "lost")
    doomed.kill()  # the whole worker: nobody is left to report the task
    time.sleep(1.2)

    url = live_world.env["FLOWWORKER_DATABASE_URL"]
    dry = CliRunner().invoke(
        cli,
        ["reap", "--older-than", "1s", "--dry-run", "--json", "--app", APP, "--database-url", url],
    )
    assert dry.exit_code == 0, dry.output
    document = json.loads(dry.output)
    assert [run["celery_task_id"] for run in document["reaped"]] == [lost.id]
    assert document["spared_live"] >= 1
    assert live_world.records(celery_task_id=lost.id)[0].status == "running", "dry run"

    result = CliRunner().invoke(
        cli, ["reap", "--older-than", "1s", "--app", APP, "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    assert "reaped 1" in result.output
    [reaped] = live_world.records(celery_task_id=lost.id)
    assert reaped.status == "failed"
    assert reaped.modified_by == "flowworker-reaper"
    assert reaped.error["type"] == "WorkerLost"
    assert reaped.error["message"].startswith(f"worker {reaped.worker} stopped responding;")
    assert "task reaped after" in reaped.error["message"]
    assert live_world.history(reaped.id) == ["queued", "running", "failed"]

    [running] = live_world.records(celery_task_id=live.id)
    assert running.status == "running", "a live long task is never reaped"
    (live_world.tmp / "live").touch()
    live_world.wait_for(1, {"completed"}, celery_task_id=live.id)


def test_a_record_that_finished_meanwhile_is_never_overwritten(
    worlds: tuple[Recording, Recording],
) -> None:
    recording = worlds[0]
    result = wait_for_file.apply_async(
        (str(recording.tmp / "quick"), 60.0), queue=recording.env["FW_TEST_QUEUE"]
    )
    (recording.tmp / "quick").touch()
    [record] = recording.wait_for(1, {"completed"}, celery_task_id=result.id)
    # as if the reaper had judged it stale just before the completion was written
    running = RunningRecord(
        id=record.id,
        flow_execution_id=record.flow_execution_id,
        task_name=record.task_name,
        task_execution_idx=record.task_execution_idx,
        celery_task_id=record.celery_task_id,
        attempt=record.attempt,
        worker=record.worker,
        started_at=record.started_at,
        updated_at=record.updated_at,
    )
    stale = StaleRun(record.organization_id, running, "worker x stopped responding")
    with transaction(recording.engine, record.organization_id) as connection:
        outcome = upsert_task_execution(connection, _failure_report(stale))
    assert outcome.outcome is UpsertOutcome.REFUSED
    assert outcome.status is ExecutionStatus.COMPLETED
    assert recording.records(celery_task_id=result.id)[0].status == "completed"


def test_nothing_to_reap_asks_no_worker(worlds: tuple[Recording, Recording]) -> None:
    recording = worlds[0]
    not_an_app: Any = object()  # asking it anything would raise WorkersUnreachable
    report = reap_stale_runs(recording.engine, not_an_app, dt.timedelta(days=365))
    assert (report.examined, report.reaped, report.refused) == (0, [], [])


def test_unreachable_broker_reaps_nothing() -> None:
    nobody = Celery(broker=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    with pytest.raises(WorkersUnreachable, match="nothing was reaped"):
        fetch_live_workers(nobody, 1.0)


def test_the_periodic_task_is_registered_and_reaps(worlds: tuple[Recording, Recording]) -> None:
    recording = worlds[0]
    task = recording.app.tasks[REAP_TASK_NAME]
    assert task.flowworker_record is False, "the reaper does not record itself"
    report = task.apply(kwargs={"older_than_seconds": 3600}).get(timeout=60)
    assert report["dry_run"] is False
    assert report["reaped"] == []


def test_judge_spares_what_a_live_worker_has_or_may_still_write() -> None:
    now = dt.datetime.now(dt.UTC)
    record = RunningRecord(
        id=uuid.uuid4(),
        flow_execution_id=uuid.uuid4(),
        task_name="t",
        task_execution_idx=0,
        celery_task_id="c1",
        attempt=0,
        worker="w1@h",
        started_at=now - dt.timedelta(seconds=700),
        updated_at=now - dt.timedelta(seconds=700),
    )
    nobody = LiveWorkers(frozenset(), frozenset())
    assert judge(record, nobody, now) == "worker w1@h stopped responding; task reaped after 700 s"
    runs_it = LiveWorkers(frozenset({"w2@h"}), frozenset({"c1"}))
    assert judge(record, runs_it, now) is None, "redelivered to another worker"
    forgot_it = LiveWorkers(frozenset({"w1@h"}), frozenset())
    assert judge(record, forgot_it, now) == (
        "worker w1@h no longer runs this task; task reaped after 700 s"
    )
    still_writing = LiveWorkers(frozenset({"w1@h"}), frozenset(), frozenset({"w1@h"}))
    assert judge(record, still_writing, now) is None, "its journal may hold the completion"
