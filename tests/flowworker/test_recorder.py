"""The recorder's writer against a real database: what it retries and what it isolates."""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url, select
from sqlalchemy.exc import DBAPIError

from flowworker.config import Settings
from flowworker.outage import database_unavailable
from flowworker.pending import PendingReport
from flowworker.recorder import AllocationTimeout, Recorder
from flowworker.steps import steps_of
from persistence.database import transaction
from persistence.models import TaskExecution
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult
from persistence.status import ExecutionStatus
from tests.persistence.helpers import history_steps, make_flow_execution, record_statuses
from tests.pg_cluster import free_port


def test_a_closed_server_is_unavailable_and_a_data_error_is_not(pg_engine: Engine) -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"postgresql://root@127.0.0.1:{free_port()}/x", connect_timeout=2)
    assert database_unavailable(refused.value)
    dsn = make_url(str(pg_engine.url)).set(drivername="postgresql")
    with (
        psycopg.connect(dsn.render_as_string(hide_password=False)) as connection,
        pytest.raises(psycopg.errors.DivisionByZero) as data_error,
    ):
        connection.execute("SELECT 1 / 0")
    assert not database_unavailable(data_error.value)


def test_a_program_limit_is_about_the_data_not_the_server(pg_engine: Engine) -> None:
    """psycopg calls SQLSTATE class 54 an OperationalError; retrying would never end."""
    dsn = make_url(str(pg_engine.url)).set(drivername="postgresql")
    insert = "INSERT INTO t SELECT string_agg(md5(n::text), '') FROM generate_series(1, 400) n"
    with psycopg.connect(dsn.render_as_string(hide_password=False)) as connection:
        connection.execute("CREATE TEMP TABLE t (v text)")
        connection.execute("CREATE INDEX ON t (v)")
        with pytest.raises(psycopg.OperationalError) as too_large:
            connection.execute(insert)  # index row size exceeds the maximum: 54000
    assert str(too_large.value.sqlstate).startswith("54")
    assert not database_unavailable(too_large.value)
    wrapped = DBAPIError.instance(insert, None, too_large.value, psycopg.Error)
    assert not database_unavailable(wrapped)


def test_a_refused_report_is_isolated_and_the_rest_of_its_batch_written(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "isolation")
    recorder = Recorder(Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)))
    good = [TaskReport(flow_execution_id, "t", idx, ExecutionStatus.COMPLETED) for idx in range(3)]
    unknown = TaskReport(uuid.uuid4(), "t", 0, ExecutionStatus.COMPLETED)
    for report in [good[0], unknown, *good[1:]]:
        recorder.record(PendingReport(report, organization_id))
    assert recorder.flush(30), "the batch must not be retried forever"
    with transaction(pg_engine) as connection:
        written = connection.execute(
            select(TaskExecution.task_execution_idx).where(
                TaskExecution.flow_execution_id == flow_execution_id
            )
        ).scalars()
        assert sorted(written) == [0, 1, 2]
    assert recorder.stats.rejected == 1
    recorder.close()


class CollectingNotifier:
    """The recorder's notifier interface, keeping what it is handed."""

    def __init__(self) -> None:
        self.results: list[UpsertResult] = []

    def publish_changes(self, results: list[UpsertResult]) -> None:
        self.results += results

    def close(self, timeout: float = 5.0) -> None:
        pass


def _journal_lines(spool: Path) -> list[str]:
    return [
        line for path in spool.glob("*.journal.jsonl") for line in path.read_text().splitlines()
    ]


def test_a_short_task_is_one_journal_line_and_one_row_write_with_every_step(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "folding")
    notifier = CollectingNotifier()
    recorder = Recorder(
        Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)),
        notifier_factory=lambda _: notifier,
        batch_delay=0.5,
    )
    S = ExecutionStatus
    reports = [
        TaskReport(flow_execution_id, "t", 0, S.QUEUED),
        TaskReport(flow_execution_id, "t", 0, S.RUNNING, input={"n": 1}, worker="w"),
        TaskReport(flow_execution_id, "t", 0, S.COMPLETED, output=2),
    ]
    recorder.record(PendingReport(reports[0], organization_id), durable=False)
    recorder.record(PendingReport(reports[1], organization_id), durable=False)
    assert _journal_lines(tmp_path) == [], "queued and running are kept in memory only"
    recorder.record(PendingReport(reports[2], organization_id))
    [line] = _journal_lines(tmp_path)  # the finished report absorbed the two before it
    assert PendingReport.from_line(line).report.steps == (S.QUEUED, S.RUNNING, S.COMPLETED)
    assert recorder.flush(30)
    recorder.close()
    with transaction(pg_engine) as connection:
        row = connection.execute(select(TaskExecution.__table__)).one()
    assert (row.status, row.version, row.input, row.output, row.worker) == (
        "completed",
        3,
        {"n": 1},
        2,
        "w",
    )
    assert (row.queued_at, row.started_at) == (reports[0].at, reports[1].at)
    assert history_steps(pg_engine, flow_execution_id=flow_execution_id) == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ]
    assert [(r.status, r.version) for r in notifier.results] == [
        (S.QUEUED, 1),
        (S.RUNNING, 2),
        (S.COMPLETED, 3),
    ]
    assert [r.updated_at for r in notifier.results[:2]] == [reports[0].at, reports[1].at]


def test_a_memory_only_report_alone_is_written_and_flush_waits_for_it(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "memory-only")
    recorder = Recorder(
        Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)),
        batch_delay=0.3,
    )
    report = TaskReport(flow_execution_id, "t", 0, ExecutionStatus.RUNNING)
    recorder.record(PendingReport(report, organization_id), durable=False)
    assert recorder.flush(30)
    with transaction(pg_engine) as connection:
        status = connection.execute(select(TaskExecution.status)).scalar_one()
    assert status == "running"
    recorder.close()


def test_steps_of_an_update_leave_earlier_steps_to_whoever_wrote_them() -> None:
    S = ExecutionStatus
    at = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    report = TaskReport(
        uuid.uuid4(),
        "t",
        0,
        S.FAILED,
        at=at + dt.timedelta(seconds=2),
        queued_at=at,
        started_at=at + dt.timedelta(seconds=1),
    )
    result = UpsertResult(
        outcome=UpsertOutcome.UPDATED,
        report=report,
        task_execution_id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        status=S.FAILED,
        version=3,
        attempt=0,
        updated_at=report.at,
        started_at=report.started_at,  # the record took this report's start time
    )
    steps = steps_of(result)
    assert [(step.status, step.version, step.updated_at) for step in steps] == [
        (S.RUNNING, 2, at + dt.timedelta(seconds=1)),
        (S.FAILED, 3, report.at),
    ]
    created = steps_of(replace(result, outcome=UpsertOutcome.CREATED))
    assert [(step.status, step.version) for step in created] == [
        (S.QUEUED, 1),
        (S.RUNNING, 2),
        (S.FAILED, 3),
    ]
    # a record that had started already (a redelivered task's first worker wrote running)
    # keeps its own start time, and its running was announced by that worker
    started_before = replace(result, started_at=at + dt.timedelta(milliseconds=500))
    assert [(step.status, step.version) for step in steps_of(started_before)] == [(S.FAILED, 3)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
@pytest.mark.parametrize("increment", [0, 5, 19])
def test_the_writer_thread_runs_at_a_lower_cpu_priority_never_below_nice_5(
    pg_engine: Engine, postgres_url: str, tmp_path: Path, increment: int
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "nice")
    recorder = Recorder(
        Settings.load(
            {}, {}, database_url=postgres_url, spool_dir=str(tmp_path), writer_nice=increment
        )
    )
    report = TaskReport(flow_execution_id, "t", 0, ExecutionStatus.COMPLETED)
    recorder.record(PendingReport(report, organization_id))
    assert recorder.flush(30)
    writer = recorder._thread.native_id
    assert writer is not None
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, writer) == min(19, own + min(increment, 5))
    recorder.close()


def test_the_worker_waits_its_turn_behind_an_allocation_stuck_on_a_database_now_back(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    """A publish gives up at once while an earlier allocation is stuck (a frozen database
    must not hold the publishing task); the worker resolving a task that runs now queues
    behind it, bounded the same way, so a database that came back records the task."""
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "stuck-allocation")
    recorder = Recorder(
        Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)),
        allocate_timeout=1.0,
    )
    dsn = make_url(str(pg_engine.url)).set(drivername="postgresql")
    locker = psycopg.connect(dsn.render_as_string(hide_password=False))
    locker.execute("LOCK TABLE task_index_counters IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(AllocationTimeout, match="did not answer within"):
            recorder.allocate_idx(flow_execution_id, "t", organization_id)
        time.sleep(0.1)
        with pytest.raises(AllocationTimeout, match="earlier"):
            recorder.allocate_idx(flow_execution_id, "t", organization_id)
        threading.Timer(0.3, locker.rollback).start()  # the database answers again
        idx = recorder.allocate_idx(
            flow_execution_id, "t", organization_id, queue_behind_stuck=True
        )
    finally:
        locker.close()
    assert idx == 1, "the stuck allocation took 0 once the lock went"
    recorder.close()


def test_a_lookup_for_a_running_task_is_bounded_when_the_database_does_not_answer(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    """The worker resolving a message that came without an identity reads the database from
    a signal handler: that read gives up after `allocate_timeout` instead of holding the
    task (the test locks the table it reads)."""
    recorder = Recorder(
        Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)),
        allocate_timeout=0.5,
    )

    def lookup() -> str:
        with transaction(recorder.engine) as connection:
            connection.execute(select(TaskExecution.id).limit(1)).all()
        return "answered"

    dsn = make_url(str(pg_engine.url)).set(drivername="postgresql")
    with psycopg.connect(dsn.render_as_string(hide_password=False)) as locker:
        locker.execute("LOCK TABLE task_executions IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(AllocationTimeout, match="did not answer"):
            recorder.run_on_database(lookup, queue_behind_stuck=True)
        assert time.monotonic() - started < 2.0
        locker.rollback()
    assert recorder.run_on_database(lookup, queue_behind_stuck=True) == "answered"
    recorder.close()


def test_a_report_the_journal_refuses_leaves_the_one_it_would_have_absorbed(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "journal-full")
    recorder = Recorder(
        Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)),
        batch_delay=0.5,
    )
    running = TaskReport(flow_execution_id, "t", 0, ExecutionStatus.RUNNING)
    recorder.record(PendingReport(running, organization_id), durable=False)
    recorder._journal.max_bytes = 0  # the disk quota is reached
    finished = TaskReport(flow_execution_id, "t", 0, ExecutionStatus.COMPLETED)
    recorder.record(PendingReport(finished, organization_id))
    assert recorder.stats.lost == 1
    assert recorder.flush(30)
    with transaction(pg_engine) as connection:
        status = connection.execute(select(TaskExecution.status)).scalar_one()
    assert status == "running", "the finished report is lost, the running one is not"
    recorder.close()


def test_a_queued_report_waits_and_is_written_only_if_no_worker_recorded_the_execution(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "queued-delay")
    recorder = Recorder(
        Settings.load(
            {}, {}, database_url=postgres_url, spool_dir=str(tmp_path), queued_write_delay=0.5
        )
    )
    at = dt.datetime.now(dt.UTC)

    def queued(idx: int) -> PendingReport:
        return PendingReport(
            TaskReport(flow_execution_id, "t", idx, ExecutionStatus.QUEUED, at=at), organization_id
        )

    recorder.record(queued(0), durable=False)
    recorder.record(queued(1), durable=False)
    # another process (the worker) records idx 0 meanwhile
    other = Recorder(Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)))
    finished = TaskReport(flow_execution_id, "t", 0, ExecutionStatus.COMPLETED, queued_at=at)
    other.record(PendingReport(finished, organization_id))
    assert other.flush(30)
    time.sleep(0.2)
    assert record_statuses(pg_engine, flow_execution_id) == {
        0: "completed"
    }  # idx 1 still held back
    deadline = time.monotonic() + 30
    while (
        record_statuses(pg_engine, flow_execution_id) != {0: "completed", 1: "queued"}
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert record_statuses(pg_engine, flow_execution_id) == {0: "completed", 1: "queued"}
    # idx 0's queued report was dropped before the upsert: nothing refused, one step each
    assert [step[1] for step in history_steps(pg_engine, task_execution_idx=0)] == [
        "queued",
        "completed",
    ]
    assert recorder.flush(30)
    recorder.close()
    other.close()


def test_flush_writes_held_back_queued_reports_at_once(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "queued-flush")
    recorder = Recorder(
        Settings.load(
            {}, {}, database_url=postgres_url, spool_dir=str(tmp_path), queued_write_delay=3600
        )
    )
    report = TaskReport(flow_execution_id, "t", 0, ExecutionStatus.QUEUED)
    recorder.record(PendingReport(report, organization_id), durable=False)
    started = time.monotonic()
    assert recorder.flush(30)
    assert time.monotonic() - started < 10
    with transaction(pg_engine) as connection:
        found = connection.execute(
            select(TaskExecution.status).where(TaskExecution.flow_execution_id == flow_execution_id)
        ).scalar_one()
    assert found == "queued"
    recorder.close()
