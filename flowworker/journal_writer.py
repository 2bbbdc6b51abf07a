"""The worker's writer process: writes the journals of the worker's processes to the database.

A Celery worker started with flowworker (`writer = process`, the default) starts this
process beside its pool, at a lower CPU priority (`writer_nice`). The pool processes (and the
worker's main process) then only append each report to their journal (tailed journals,
`flowworker.journal`), and this process does everything else: it reads the new lines of
every journal it can claim, folds a short task's reports into one write (its `running`
report into its finished one), holds `queued` reports back for `queued_write_delay` (the
worker usually writes the execution first), writes a batch per cycle through
`DatabaseWriter`, and advances each journal's committed mark after the commit. A task's
process thus never runs a database write, and the writing waits while the tasks need the
CPU.

Safe to stop or kill at any moment: what is not committed is still in the journals, and
the next writer (or any recorder that finds a journal nobody holds) writes it; the upsert
is idempotent. Exits when the worker does (after writing what its processes left, at most
`DRAIN_SECONDS`), or when its parent disappears.

    python -c "from flowworker.journal_writer import main; main()"   (FLOWWORKER_* settings)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from flowworker.config import Settings
from flowworker.database_writer import DatabaseWriter
from flowworker.journal import TAILED_SUFFIX, CommittedMark, Journal, read_reports, stats_path
from flowworker.outage import database_unavailable
from flowworker.pending import PendingReport
from flowworker.plugin import make_notifier
from flowworker.recorder import RecorderStats, lower_priority
from persistence.database import create_database_engine

log = logging.getLogger(__name__)

BATCH_DELAY = 0.05
BATCH_SIZE = 1000
DRAIN_SECONDS = 10.0
RETRY_DELAY = 1.0
STATS_INTERVAL = 5.0


class _Tail:
    """One journal this process writes: read from its committed mark on."""

    def __init__(self, path: Path, mark: CommittedMark, handle: IO[bytes]) -> None:
        self.path = path
        self.mark = mark
        self.handle = handle
        self.owner_gone = False

    @classmethod
    def claim(cls, path: Path) -> _Tail | None:
        mark = CommittedMark.claim(path)
        if mark is None:
            return None  # another writer has it
        try:
            handle = path.open("rb")
        except OSError:  # deleted meanwhile
            mark.release()
            return None
        return cls(path, mark, handle)

    def read(self, limit: int) -> tuple[list[PendingReport], int]:
        """Up to `limit` reports after the mark, and the offset after the last one."""
        self.handle.seek(self.mark.value)
        found, read = read_reports(self.handle, limit)
        return [item for item, _ in found], self.mark.value + read

    def finished(self) -> bool:
        """Its owner let go of it (rotated or exited) and everything in it is written."""
        if not self.owner_gone:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # the owner still appends to it
            self.owner_gone = True
        size = os.fstat(self.handle.fileno()).st_size
        if self.mark.value < size:
            self.handle.seek(self.mark.value)
            if b"\n" in self.handle.read():
                return False
            # a line its owner was killed in the middle of: nothing to read there
            log.error("flowworker: skipping a torn last line in %s", self.path)
        return True

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.mark.remove()
        self.handle.close()

    def release(self) -> None:
        self.mark.release()
        self.handle.close()


def folded(items: list[PendingReport]) -> list[PendingReport]:
    """`items` (one journal, in order) with each report that is followed by a later one of
    the same execution before it was written folded into that one (`PendingReport.absorbing`):
    only queued and running reports fold; a finished one is written as it is."""
    slots: list[PendingReport | None] = []
    position: dict[tuple[Any, ...], int] = {}
    for item in items:
        merged = item
        earlier_at = position.get(item.key)
        if earlier_at is not None:
            earlier = slots[earlier_at]
            if earlier is not None and not earlier.report.status.is_terminal:
                merged = item.absorbing(earlier)
                slots[earlier_at] = None
        position[item.key] = len(slots)
        slots.append(merged)
    return [item for item in slots if item is not None]


class JournalWriter:
    def __init__(self, settings: Settings, *, batch_size: int = BATCH_SIZE) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.stats = RecorderStats()
        engine = create_database_engine(
            settings.database_url, json_max_bytes=settings.json_max_bytes, pool_size=1
        )
        self.writer = DatabaseWriter(
            engine, settings.organization, make_notifier(settings), self.stats
        )
        self.tails: dict[Path, _Tail] = {}
        #: queued reports waiting out `queued_write_delay`: (when due, report)
        self.deferred: collections.deque[tuple[float, PendingReport]] = collections.deque()
        # journals of processes that wrote their own (no writer process) and are gone
        self.orphans = Journal(settings.spool_dir, json_max_bytes=settings.json_max_bytes)
        self._outage_logged = False

    def cycle(self, *, draining: bool = False) -> bool:
        """Write what is new in every journal (and the queued reports now due); True when a
        journal had more than one batch waiting."""
        self._discover()
        batch: list[PendingReport] = []
        marks: list[tuple[_Tail, int]] = []
        busy = False
        for tail in list(self.tails.values()):
            items, end = tail.read(self.batch_size)
            if items:
                batch += folded(items)
                marks.append((tail, end))
                busy = busy or len(items) == self.batch_size
            elif end > tail.mark.value:  # only unreadable lines
                tail.mark.set(end)
            elif tail.finished():
                tail.remove()
                del self.tails[tail.path]
        queued = [item for item in batch if item.held_back]
        now_items = [item for item in batch if not item.held_back]
        due = self._due(everything=draining)
        try:
            if now_items or due:
                self.writer.write(now_items + due)
        except Exception:
            self.deferred.extendleft((0.0, item) for item in reversed(due))
            raise
        for tail, end in marks:
            tail.mark.set(end)
        delay = 0.0 if draining else self.settings.queued_write_delay
        self.deferred.extend((time.monotonic() + delay, item) for item in queued)
        self.orphans.replay_orphans(self.writer.write)
        return busy

    def idle(self) -> bool:
        return not self.tails and not self.deferred

    def _discover(self) -> None:
        directory = self.settings.spool_dir
        if not directory.exists():
            return
        for path in directory.glob(f"*{TAILED_SUFFIX}"):
            if path not in self.tails:
                tail = _Tail.claim(path)
                if tail is not None:
                    self.tails[path] = tail

    def _due(self, *, everything: bool) -> list[PendingReport]:
        now = time.monotonic()
        due: list[PendingReport] = []
        while self.deferred and (everything or self.deferred[0][0] <= now):
            due.append(self.deferred.popleft()[1])
        return due

    def run(self, stop: threading.Event, parent: int | None = None) -> None:
        """Write until `stop` is set or process `parent` (when given) is gone, then write
        what is left (at most `DRAIN_SECONDS`) and let go of the journals."""
        stats_due = 0.0
        drain_until: float | None = None
        while True:
            gone = parent is not None and os.getppid() != parent
            if drain_until is None and (stop.is_set() or gone):
                drain_until = time.monotonic() + DRAIN_SECONDS
            draining = drain_until is not None
            try:
                busy = self.cycle(draining=draining)
                self._outage_logged = False
            except Exception as exc:
                self._note_error(exc)
                busy = False
                if draining and time.monotonic() > drain_until:  # type: ignore[operator]
                    break
                time.sleep(RETRY_DELAY)
                continue
            if time.monotonic() > stats_due:
                self._write_stats()
                stats_due = time.monotonic() + STATS_INTERVAL
            if draining and (self.idle() or time.monotonic() > drain_until):  # type: ignore[operator]
                break
            if not busy:
                time.sleep(BATCH_DELAY)
        self._write_stats()
        self.close()

    def close(self) -> None:
        """Let go of the journals (the next writer resumes at their marks) and the
        connections."""
        for tail in self.tails.values():
            tail.release()
        self.tails.clear()
        if self.writer.notifier is not None:
            self.writer.notifier.close()
        self.writer.engine.dispose()

    def _note_error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if not database_unavailable(exc):
            log.error("flowworker: the writer process failed a cycle", exc_info=True)
        elif not self._outage_logged:
            log.warning("flowworker: database unavailable; reports wait in the journals: %s", exc)
            self._outage_logged = True

    def _write_stats(self) -> None:
        path = stats_path(self.settings.spool_dir, os.getpid())
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            document = {
                **dataclasses.asdict(self.stats),
                "backlog_bytes": sum(
                    max(tail.path.stat().st_size - tail.mark.value, 0)
                    for tail in self.tails.values()
                    if tail.path.exists()
                ),
                "pid": os.getpid(),
                "written_at": time.time(),
            }
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(document))
            temporary.replace(path)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="[%(asctime)s: %(levelname)s/writer] %(message)s"
    )
    settings = Settings.load(None)
    lower_priority(settings.writer_nice)  # before any thread: they inherit it
    stop_event = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    JournalWriter(settings).run(stop_event, os.getppid())


if __name__ == "__main__":
    main()
