"""The per-process journal: offsets, commits, replay, and adoption of dead processes' files."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from flowworker.journal import SUFFIX, Journal, JournalFull
from flowworker.pending import PendingReport, journal_line
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus

ROOT = Path(__file__).resolve().parents[2]
ORGANIZATION = uuid.uuid4()


def report(idx: int, status: ExecutionStatus = ExecutionStatus.COMPLETED) -> PendingReport:
    return PendingReport(
        TaskReport(uuid.uuid4(), "t", idx, status, output={"idx": idx, "odd": object()}),
        ORGANIZATION,
    )


def test_offsets_grow_and_a_fully_committed_journal_is_emptied(tmp_path: Path) -> None:
    journal = Journal(tmp_path, json_max_bytes=1 << 20)
    offsets = [journal.append(report(n)) for n in range(3)]
    assert offsets == sorted(offsets)
    assert journal.backlog() == offsets[-1]
    journal.commit(offsets[1])
    assert [item.report.task_execution_idx for item, _ in journal.read_uncommitted(10)] == [2]
    journal.commit(offsets[2])
    assert journal.backlog() == 0
    [path] = tmp_path.glob(f"*{SUFFIX}")
    assert path.stat().st_size == 0
    later = journal.append(report(3))
    assert later > offsets[-1], "offsets never go back, also after the file was emptied"
    journal.close()
    assert path.exists(), "uncommitted reports keep the file"


def test_a_report_reads_back_as_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path, json_max_bytes=1 << 20)
    original = report(7, ExecutionStatus.FAILED)
    journal.append(original)
    [(item, _)] = journal.read_uncommitted(10)
    assert item.report.key == original.report.key
    assert item.report.status is ExecutionStatus.FAILED
    assert item.report.output["idx"] == 7
    assert item.report.output["odd"]["$unserializable"] == "builtins.object"
    assert item.organization_id == ORGANIZATION


def test_the_cap_refuses_instead_of_growing_without_bound(tmp_path: Path) -> None:
    journal = Journal(tmp_path, json_max_bytes=1 << 20, max_bytes=600)

    def fill() -> None:
        for n in range(100):
            journal.append(report(n))

    with pytest.raises(JournalFull):
        fill()
    assert journal.dropped == 1
    assert journal.backlog() <= 600


def test_fsync_mode_writes_the_same_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path, json_max_bytes=1 << 20, fsync=True)
    journal.append(report(1))
    assert len(journal.read_uncommitted(10)) == 1


DIE_WITH_A_BACKLOG = """
import os, sys, uuid
from pathlib import Path
from flowworker.journal import Journal
from flowworker.pending import PendingReport
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus
journal = Journal(Path(sys.argv[1]), json_max_bytes=1 << 20)
for idx in range(3):
    journal.append(PendingReport(
        TaskReport(uuid.uuid4(), "orphan", idx, ExecutionStatus.COMPLETED), uuid.uuid4()))
with open(next(Path(sys.argv[1]).glob("*.jsonl")), "a") as handle:
    handle.write('{"torn":')  # a crash in the middle of a line
os._exit(0)  # no cleanup, like a killed process
"""


def test_the_journal_of_a_dead_process_is_replayed_once_and_removed(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", DIE_WITH_A_BACKLOG, str(tmp_path)], cwd=ROOT, check=True)
    journal = Journal(tmp_path, json_max_bytes=1 << 20)
    written: list[PendingReport] = []
    assert journal.replay_orphans(written.extend) == 3
    assert [item.report.task_execution_idx for item in written] == [0, 1, 2]
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []


def test_a_live_process_keeps_its_journal(tmp_path: Path) -> None:
    owner = Journal(tmp_path, json_max_bytes=1 << 20)
    owner.append(report(1))
    other = Journal(tmp_path, json_max_bytes=1 << 20)
    assert other.replay_orphans(lambda items: None) == 0
    assert len(owner.read_uncommitted(10)) == 1


def test_a_journal_adopted_before_its_owner_locks_it_is_not_written_into_the_void(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between creating its file and taking the lock, the owner's empty journal looks like an
    orphan: another process may adopt and delete it. The owner must not keep writing there."""
    import fcntl

    owner = Journal(tmp_path, json_max_bytes=1 << 20)
    other = Journal(tmp_path, json_max_bytes=1 << 20)
    real_flock = fcntl.flock

    def flock_after_a_scan(fd: object, operation: int) -> None:
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert other.replay_orphans(lambda items: None) == 0
        real_flock(fd, operation)  # type: ignore[arg-type]

    monkeypatch.setattr(fcntl, "flock", flock_after_a_scan)
    owner.append(report(1))
    [path] = tmp_path.glob(f"*{SUFFIX}")
    assert path.stat().st_size > 0, "the report is in a file another process can adopt"
    assert len(owner.read_uncommitted(10)) == 1


def test_a_torn_line_in_the_middle_does_not_hold_back_the_reports_after_it(
    tmp_path: Path,
) -> None:
    subprocess.run([sys.executable, "-c", DIE_WITH_A_BACKLOG, str(tmp_path)], cwd=ROOT, check=True)
    [path] = tmp_path.glob(f"*{SUFFIX}")
    lines = path.read_bytes().splitlines(keepends=True)
    # e.g. a write cut short by a full disk, then later lines appended after it
    path.write_bytes(lines[0] + b'{"torn":\xff\x00' + b"".join(lines[1:3]))
    journal = Journal(tmp_path, json_max_bytes=1 << 20)
    written: list[PendingReport] = []
    assert journal.replay_orphans(written.extend) == 2
    assert [item.report.task_execution_idx for item in written] == [0, 2]
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []

    own = Journal(tmp_path / "own", json_max_bytes=1 << 20)
    own.append(report(1))
    assert own._path is not None
    with own._path.open("ab") as handle:
        handle.write(b"\x00\x00\x00\n")
    own._size = own._path.stat().st_size
    own.append(report(2))
    assert [item.report.task_execution_idx for item, _ in own.read_uncommitted(10)] == [1, 2]


def test_a_line_whose_report_fails_validation_is_skipped_not_retried_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a worker's task process journals its finished reports without validating them
    # (`signals._journal_finished`); the reader validates, and a bad one must cost only itself
    journal = Journal(tmp_path, json_max_bytes=1 << 20)
    journal.append(report(0))
    scalars = orjson.loads(report(1).to_line(1 << 20))
    for bad in ({"task_name": "x" * 201}, {"task_execution_idx": -1}, {"status": "done"}):
        journal.append_line(journal_line({**scalars, **bad}, None, None, None, 1 << 20), True)
    journal.append(report(2))
    assert [item.report.task_execution_idx for item, _ in journal.read_uncommitted(10)] == [0, 2]
    assert caplog.text.count("skipping an unreadable journal line") == 3
