"""The writer process's parts against a real PostgreSQL: tailed journals, committed marks,
folding, held-back `queued` reports, and what an outage leaves (`flowworker.journal_writer`)."""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from flowworker.config import Settings
from flowworker.journal import TAILED_SUFFIX, CommittedMark, Journal, read_committed
from flowworker.journal_writer import JournalWriter, folded
from flowworker.outage import database_unavailable
from flowworker.pending import PendingReport
from flowworker.writer_process import WriterProcess, environment_for
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from tests.persistence.helpers import history_steps, make_flow_execution, record_statuses
from tests.pg_cluster import free_port

NOW = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)


def report(flow_execution_id: uuid.UUID, status: S, idx: int = 0, **fields: object) -> TaskReport:
    return TaskReport(flow_execution_id, "t", idx, status, **fields)  # type: ignore[arg-type]


def settings(url: str, spool: Path, **overrides: object) -> Settings:
    return Settings.load({}, {}, database_url=url, spool_dir=str(spool), **overrides)


def journal_with_one_report(
    directory: Path, organization_id: uuid.UUID, flow_execution_id: uuid.UUID
) -> tuple[Journal, Path]:
    """A tailed journal holding one finished report, and its file."""
    journal = Journal(directory, json_max_bytes=1 << 20, tailed=True)
    journal.append(PendingReport(report(flow_execution_id, S.COMPLETED), organization_id))
    [path] = directory.glob(f"*{TAILED_SUFFIX}")
    return journal, path


def test_a_running_report_folds_into_the_finished_one_and_a_finished_one_never_does() -> None:
    organization_id, flow_execution_id = uuid.uuid4(), uuid.uuid4()
    running = PendingReport(
        report(flow_execution_id, S.RUNNING, at=NOW, queued_at=NOW, input={"a": 1}),
        organization_id,
    )
    completed = PendingReport(report(flow_execution_id, S.COMPLETED, output=2), organization_id)
    other = PendingReport(report(flow_execution_id, S.RUNNING, idx=1), organization_id)

    [kept, merged] = folded([running, other, completed])
    assert kept is other  # the finished report takes the later place
    assert merged.report.status is S.COMPLETED
    assert (merged.report.started_at, merged.report.queued_at) == (NOW, NOW)
    assert merged.report.input == {"a": 1}
    assert merged.reports == 2

    # a redelivered message's `running` after a finished report: both written, in order
    assert folded([completed, running]) == [completed, running]


def test_the_writer_writes_a_tailed_journal_once_and_deletes_it_when_its_owner_lets_go(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "tailed")
    journal = Journal(tmp_path, json_max_bytes=1 << 20, tailed=True)
    for status in (S.RUNNING, S.COMPLETED):
        journal.append(
            PendingReport(report(flow_execution_id, status, queued_at=NOW), organization_id)
        )
    [path] = tmp_path.glob(f"*{TAILED_SUFFIX}")
    assert journal.tailed_backlog() == path.stat().st_size > 0

    writer = JournalWriter(settings(postgres_url, tmp_path))
    writer.cycle()
    assert record_statuses(pg_engine, flow_execution_id) == {0: "completed"}
    # one write for both reports, the history still shows every step
    assert [step[1] for step in history_steps(pg_engine, flow_execution_id=flow_execution_id)] == [
        "queued",
        "running",
        "completed",
    ]
    assert read_committed(path) == path.stat().st_size
    assert journal.tailed_backlog() == 0
    assert writer.stats.written == 2

    writer.cycle()  # nothing new: nothing written again, and the owner still holds the file
    assert writer.stats.written == 2
    assert path.exists()

    journal.close()
    writer.cycle()
    assert not path.exists()
    assert not Path(str(path) + ".committed").exists()
    assert writer.idle()
    writer.close()


def test_a_rotated_journal_is_finished_and_deleted_and_the_owner_sees_it_written(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "rotated")
    journal = Journal(tmp_path, json_max_bytes=1 << 20, tailed=True, rotate_bytes=600)
    for idx in range(12):
        for status in (S.RUNNING, S.COMPLETED):
            journal.append(PendingReport(report(flow_execution_id, status, idx), organization_id))
    journal.append(PendingReport(report(flow_execution_id, S.RUNNING, 12), organization_id))
    files = sorted(tmp_path.glob(f"*{TAILED_SUFFIX}"))
    assert len(files) > 3  # sealed after a finished report once over 600 bytes
    assert journal.tailed_backlog() > 0

    writer = JournalWriter(settings(postgres_url, tmp_path))
    writer.cycle()
    writer.cycle()  # the first pass writes; the next deletes what the owner let go of
    assert record_statuses(pg_engine, flow_execution_id) == {
        **dict.fromkeys(range(12), "completed"),
        12: "running",
    }
    assert len(list(tmp_path.glob(f"*{TAILED_SUFFIX}"))) == 1  # the one still open
    assert journal.tailed_backlog() == 0
    writer.close()


def test_a_journal_is_written_by_one_writer_at_a_time(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "one-writer")
    _, path = journal_with_one_report(tmp_path, organization_id, flow_execution_id)

    first = JournalWriter(settings(postgres_url, tmp_path))
    first.cycle()
    assert CommittedMark.claim(path) is None  # the first writer holds the mark
    second = JournalWriter(settings(postgres_url, tmp_path))
    second.cycle()
    assert (first.stats.written, second.stats.written) == (1, 0)
    first.close()
    second.close()


def test_queued_reports_wait_and_are_dropped_once_a_worker_recorded_the_execution(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "held-back")
    journal = Journal(tmp_path, json_max_bytes=1 << 20, tailed=True)
    # idx 0 is published and runs at once; idx 1 waits in the queue
    journal.append(PendingReport(report(flow_execution_id, S.QUEUED, 0), organization_id))
    journal.append(PendingReport(report(flow_execution_id, S.QUEUED, 1), organization_id))
    writer = JournalWriter(settings(postgres_url, tmp_path, queued_write_delay=60))
    writer.cycle()
    assert record_statuses(pg_engine, flow_execution_id) == {}  # held back

    journal.append(
        PendingReport(report(flow_execution_id, S.COMPLETED, 0, queued_at=NOW), organization_id)
    )
    writer.cycle()
    assert record_statuses(pg_engine, flow_execution_id) == {0: "completed"}
    writer.cycle(draining=True)  # at the writer's exit every held report is due
    assert record_statuses(pg_engine, flow_execution_id) == {0: "completed", 1: "queued"}
    # idx 0's queued report was dropped, not refused by the upsert: one history step each
    assert [step[1] for step in history_steps(pg_engine, task_execution_idx=0)] == [
        "queued",
        "completed",
    ]
    assert writer.stats.rejected == 0
    writer.close()


def test_an_outage_leaves_the_journal_where_it_was_for_the_next_writer(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "outage")
    _, path = journal_with_one_report(tmp_path, organization_id, flow_execution_id)

    down = f"postgresql://root@127.0.0.1:{free_port()}/nowhere"
    unlucky = JournalWriter(settings(down, tmp_path))
    with pytest.raises(OperationalError) as raised:
        unlucky.cycle()
    assert database_unavailable(raised.value)
    assert read_committed(path) == 0
    unlucky.close()  # as when that writer exits

    writer = JournalWriter(settings(postgres_url, tmp_path))
    writer.cycle()
    writer.close()
    assert record_statuses(pg_engine, flow_execution_id) == {0: "completed"}


def test_the_writer_process_reads_the_settings_the_worker_resolved(tmp_path: Path) -> None:
    resolved = settings(
        "postgresql://root@db/x", tmp_path, redact_keys="pin, otp", journal_fsync=True
    )
    assert Settings.load(None, environ=environment_for(resolved)) == resolved


def test_a_writer_process_that_cannot_run_is_replaced_by_a_thread_that_writes(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "fallback")
    journal, _ = journal_with_one_report(tmp_path, organization_id, flow_execution_id)
    broken = [sys.executable, "-c", "raise SystemExit(3)"]  # a writer that exits at once
    writer = WriterProcess(settings(postgres_url, tmp_path), command=broken)
    deadline = time.monotonic() + 30
    while record_statuses(pg_engine, flow_execution_id) != {0: "completed"}:
        assert time.monotonic() < deadline, "the journal was never written"
        time.sleep(0.1)
    assert writer.fallback is not None
    assert writer.pid is None
    journal.close()
    writer.stop()
    assert not writer.fallback.is_alive()
    assert not list(tmp_path.glob(f"*{TAILED_SUFFIX}"))  # finished and deleted on the way out
