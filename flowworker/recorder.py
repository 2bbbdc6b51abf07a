"""Writes the reports of one process to the database, never in a task's way.

A signal handler's whole cost is `record`: append the report to an in-memory queue and,
for a durable report (every terminal one), to this process's journal first
(`flowworker.journal`; it survives the process being killed). A report that finds an
earlier, still unwritten report of the same execution absorbs it (`TaskReport.absorb`):
a short task's queued, running and finished reports become one row write. One writer
thread per process then writes the queue in batches, in report order, one transaction per
organization, and advances the journal's committed offset after each commit. When the
database is down or hangs, nothing waits for it: reports keep going into the journal (and
memory), and the writer replays the journal, in order, once the database answers again.
Journals left by killed processes are adopted and replayed by whoever finds them.

Nothing here raises into a task: errors are logged with context and counted in `stats`.
Connections and the thread are made per process, after fork (Celery's prefork pool).
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine

from flowworker.config import THREAD_NICE_MAX, Settings
from flowworker.database_writer import DatabaseWriter, Notifier
from flowworker.journal import Journal, JournalFull
from flowworker.outage import database_unavailable
from flowworker.pending import PendingReport
from persistence.database import create_database_engine, transaction
from persistence.errors import FlowworkerError
from persistence.hierarchy import (
    AdHocFlowExecution,
    allocate_task_execution_idx,
    ensure_flow_executions,
    organization_id_for,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: reports kept in memory beyond this are read back from the journal instead
_MEMORY_QUEUE_MAX = 20_000
_RETRY_DELAY = 1.0


class _Process:
    """This process's id, kept current across fork without a system call per report."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()


_process = _Process()


class AllocationTimeout(FlowworkerError):
    """The database did not answer a signal handler's call (an idx allocation, the
    lookup of a record's key) in time."""


@dataclass
class RecorderStats:
    recorded: int = 0
    written: int = 0
    rejected: int = 0
    lost: int = 0
    errors: int = 0
    last_write_at: float | None = None
    last_error: str | None = None


class Recorder:
    def __init__(
        self,
        settings: Settings,
        *,
        notifier_factory: Callable[[Settings], Notifier | None] | None = None,
        batch_delay: float = 0.05,
        batch_size: int = 500,
        allocate_timeout: float = 2.0,
    ) -> None:
        self.settings = settings
        self.allocate_timeout = allocate_timeout
        self.batch_delay = batch_delay
        self.batch_size = batch_size
        self.stats = RecorderStats()
        self._notifier_factory = notifier_factory
        self._pid: int | None = None
        self._init_lock = threading.Lock()
        self._engine: Engine | None = None
        self._default_organization_id = organization_id_for(settings.organization)
        #: a writer process (`flowworker.journal_writer`) writes this process's journal:
        #: `record` only appends to it, and no writer thread runs here
        self.tailed = False

    # -- per-process state, made lazily so that a fork gets its own ---------------------

    def _ensure_process(self) -> None:
        if self._pid == _process.pid:  # twice per task: getpid(2) is a system call
            return
        with self._init_lock:
            if self._pid == os.getpid():
                return
            if self._engine is not None:
                # inherited across fork: let go of the parent's connections without
                # closing them under the parent's feet
                self._engine.dispose(close=False)
            self._engine = create_database_engine(
                self.settings.database_url,
                json_max_bytes=self.settings.json_max_bytes,
                pool_size=2,
            )
            # decided once per process: a fork (a pool child) decides again
            self._tailed_here = self.tailed
            self._journal = Journal(
                self.settings.spool_dir,
                json_max_bytes=self.settings.json_max_bytes,
                fsync=self.settings.journal_fsync,
                tailed=self._tailed_here,
            )
            self._notifier = (
                self._notifier_factory(self.settings)
                if self._notifier_factory and not self._tailed_here
                else None
            )
            # (report, its journal offset; None for a report kept in memory only)
            self._queue: list[tuple[PendingReport, int | None]] = []
            # memory-only reports not yet taken by the writer, by execution key
            self._unwritten: dict[tuple[uuid.UUID, str, int], PendingReport] = {}
            self._writing_unjournaled = 0
            # `queued` reports waiting out `queued_write_delay`: (when due, report)
            self._deferred: collections.deque[tuple[float, PendingReport]] = collections.deque()
            self._queue_lock = threading.Condition()
            self._replaying = False  # the journal, not the queue, is the source of truth
            self._overflow = False  # reports went to the journal only (memory queue full)
            self._flush_requested = False
            self._write_started: float | None = None
            self._allocation_started: float | None = None
            self._allocator = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="flowworker-allocate"
            )
            self._stopping = False
            self._idle = threading.Event()
            self.stats = RecorderStats()
            self._writer = DatabaseWriter(
                self._engine, self.settings.organization, self._notifier, self.stats
            )
            self._thread = threading.Thread(
                target=self._run, name="flowworker-recorder", daemon=True
            )
            self._pid = os.getpid()
            if not self._tailed_here:
                self._thread.start()

    @property
    def engine(self) -> Engine:
        self._ensure_process()
        assert self._engine is not None
        return self._engine

    # -- what signal handlers call --------------------------------------------------------

    def record(self, item: PendingReport, *, durable: bool = True) -> None:
        """Hand a report over. A durable report is journaled (safe from a crash of this
        process) on return; a non-durable one (queued, running: a later report says more)
        waits in memory only. Either absorbs an earlier unwritten memory-only report of
        the same execution, so that one row write does for both.

        A `queued` report waits `queued_write_delay` seconds first, and is then written
        only if no worker has recorded the execution meanwhile: a task that starts at once
        costs no row write at publish (the worker's report says when it was queued)."""
        self._ensure_process()
        if self._tailed_here:
            self._append_for_writer_process(item)
            return
        with self._queue_lock:
            carried = item.reports  # counted now: an absorbed one was counted before
            earlier = self._unwritten.pop(item.key, None)
            if earlier is not None:
                item = item.absorbing(earlier)
            offset: int | None = None
            if durable:
                try:
                    offset = self._journal.append(item)
                except (JournalFull, OSError) as exc:
                    self.stats.lost += carried
                    self._note_error("report lost: the journal cannot take it", exc)
                    if earlier is not None:  # it is still queued: let it be written
                        self._unwritten[item.key] = earlier
                    return
            self.stats.recorded += carried
            if len(self._queue) + len(self._deferred) >= _MEMORY_QUEUE_MAX:
                if durable:
                    self._overflow = True  # the writer reads it back from the journal
                else:
                    self.stats.lost += 1  # a non-terminal report: the next one says more
            elif not durable and item.held_back:
                self._unwritten[item.key] = item
                delay = self.settings.queued_write_delay
                self._deferred.append((time.monotonic() + delay, item))
            else:
                self._queue.append((item, offset))
                if not durable:
                    self._unwritten[item.key] = item
            if len(self._queue) >= self.batch_size:
                self._queue_lock.notify()

    def _append_for_writer_process(self, item: PendingReport) -> None:
        """Tailed: every report goes to the journal, which the writer process reads (it
        folds a short task's reports into one write there, and holds `queued` ones back)."""
        line = item.to_line(self.settings.json_max_bytes)
        self._append_line(line, item.reports, item.report.status.is_terminal)

    def journals_only(self) -> bool:
        """Whether this process's reports only go to its journal, for the worker's writer
        process to write (a worker's task process): `record_line` then applies."""
        self._ensure_process()
        return self._tailed_here

    def record_line(self, line: str, reports: int) -> None:
        """A finished report made straight into its journal line (`journal_line`), in a
        process that `journals_only`; the writer process validates it as it reads it."""
        self._append_line(line, reports, terminal=True)

    def _append_line(self, line: str, reports: int, terminal: bool) -> None:
        try:
            self._journal.append_line(line, terminal)
        except (JournalFull, OSError) as exc:
            self.stats.lost += reports
            self._note_error("report lost: the journal cannot take it", exc)
            return
        self.stats.recorded += reports

    def default_organization_id(self) -> uuid.UUID:
        """The organization of tasks no flow started; known without asking the database
        (the writer creates its row before the first record that needs it)."""
        return self._default_organization_id

    def allocate_idx(
        self,
        flow_execution_id: uuid.UUID,
        task_name: str,
        organization_id: uuid.UUID,
        *,
        ad_hoc: AdHocFlowExecution | None = None,
        at_least: int = 0,
        queue_behind_stuck: bool = False,
    ) -> int:
        """The next task_execution_idx of `task_name` in the flow execution (one round trip).

        Runs on a helper thread and waits at most `allocate_timeout`: a frozen database must
        not hang the task that is publishing. Raises `AllocationTimeout` then (the message
        goes out without an identity and the worker resolves it on first sight). While an
        earlier allocation is stuck it raises at once, unless `queue_behind_stuck`: the
        worker resolving a task that is about to run or has finished waits its turn (at
        most `allocate_timeout` too), since the database that froze is likely back by then
        and giving up would leave the execution unrecorded."""
        return self.run_on_database(
            functools.partial(
                self._allocate, flow_execution_id, task_name, organization_id, ad_hoc, at_least
            ),
            queue_behind_stuck=queue_behind_stuck,
        )

    def run_on_database(self, work: Callable[[], T], *, queue_behind_stuck: bool = False) -> T:
        """`work()` (a database round trip a signal handler needs the answer of) on the
        helper thread, waited for at most `allocate_timeout`: raises `AllocationTimeout`
        instead of holding the task when the database does not answer. See `allocate_idx`
        for `queue_behind_stuck`."""
        self._ensure_process()
        started = self._allocation_started
        if (
            not queue_behind_stuck
            and started is not None
            and time.monotonic() - started > self.allocate_timeout
        ):
            raise AllocationTimeout("an earlier call still waits on the database")
        future = self._allocator.submit(self._timed, work)
        try:
            return future.result(timeout=self.allocate_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # still queued behind a stuck one: never run it for nobody
            raise AllocationTimeout(
                f"the database did not answer within {self.allocate_timeout} s"
            ) from None

    def _timed(self, work: Callable[[], T]) -> T:
        self._allocation_started = time.monotonic()
        try:
            return work()
        finally:
            self._allocation_started = None

    def _allocate(
        self,
        flow_execution_id: uuid.UUID,
        task_name: str,
        organization_id: uuid.UUID,
        ad_hoc: AdHocFlowExecution | None,
        at_least: int,
    ) -> int:
        with transaction(self.engine, organization_id) as connection:
            if ad_hoc is not None and ad_hoc.id not in self._writer.known_flow_executions:
                self._writer.ensure_default_organization(connection, [ad_hoc])
                ensure_flow_executions(connection, [ad_hoc])
            idx = allocate_task_execution_idx(
                connection, flow_execution_id, task_name, at_least=at_least
            )
        if ad_hoc is not None:
            self._writer.remember_flow_executions([ad_hoc.id])
        return idx

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is in the database (True) or `timeout`.
        Returns False at once while the database is known to be unavailable."""
        if self._pid != os.getpid():
            return True
        if self._tailed_here:
            return self._wait_for_writer_process(timeout)
        if self._replaying or self._stuck():
            return self._all_written()
        deadline = time.monotonic() + timeout
        while not self._all_written():
            with self._queue_lock:
                self._flush_requested = True
                self._queue_lock.notify()
            if time.monotonic() > deadline or self._stuck():
                return False
            time.sleep(0.01)
        return True

    def _wait_for_writer_process(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._journal.tailed_backlog():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _all_written(self) -> bool:
        # under the lock: `record` and `_take_batch` move a report between the journal,
        # `_unwritten` and `_writing_unjournaled` in steps that must not be seen halfway
        with self._queue_lock:
            return not (self._journal.backlog() or self._unwritten or self._writing_unjournaled)

    def close(self, timeout: float = 10.0) -> None:
        if self._pid != os.getpid():
            return
        if self._tailed_here:  # the writer process finishes the journal once this one lets go
            self._journal.close()
            return
        flushed = self.flush(timeout)
        self._stopping = True
        with self._queue_lock:
            self._queue_lock.notify()
        self._thread.join(timeout=2.0)
        self._journal.close()
        if self._notifier is not None:
            self._notifier.close(timeout=min(timeout, 5.0))
        if not flushed:
            log.warning(
                "flowworker: %d bytes of reports are still in the journal in %s; the next "
                "process to start replays them",
                self._journal.backlog(),
                self.settings.spool_dir,
            )

    def _stuck(self, after: float = 1.0) -> bool:
        """The writer has waited on the database for more than `after` seconds (a frozen or
        unreachable server that refuses nothing)."""
        started = self._write_started
        return started is not None and time.monotonic() - started > after

    def backlog(self) -> int:
        """Bytes of reports recorded but not yet in the database."""
        self._ensure_process()
        return self._journal.tailed_backlog() if self._tailed_here else self._journal.backlog()

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        lower_priority(min(self.settings.writer_nice, THREAD_NICE_MAX))
        retry_at = 0.0
        while True:
            batch = self._take_batch()
            if self._stopping and not batch and not self._replaying:
                return
            if time.monotonic() < retry_at:
                # the journal holds the journaled ones; memory-only ones only the queue
                self._requeue_unjournaled(batch)
                time.sleep(min(0.2, retry_at - time.monotonic()))
                continue
            self._write_started = time.monotonic()
            try:
                if self._replaying or self._overflow:
                    self._replaying = True
                    # Memory-only reports before the journal: a finished report that came
                    # while one of them was being written (so could not absorb it) and that
                    # write failed is in the journal, and must land after it.
                    unjournaled = [item for item, offset in batch if offset is None]
                    if unjournaled:
                        self._writer.write(unjournaled)
                        batch = []  # written: nothing to wait again if the replay fails
                    self._replay_journal()
                elif batch:
                    self._writer.write([item for item, _ in batch])
                    offsets = [offset for _, offset in batch if offset is not None]
                    if offsets:
                        self._journal.commit(offsets[-1])
                else:
                    self._journal.replay_orphans(self._writer.write)
                retry_at = 0.0
            except Exception as exc:  # never let the writer die
                self._requeue_unjournaled(batch)
                if not self._replaying:
                    if database_unavailable(exc):
                        self._note_error("database unavailable; reports wait in the journal", exc)
                    else:
                        self._note_error("unexpected error in the recorder", exc, exc_info=True)
                self._replaying = True
                retry_at = time.monotonic() + _RETRY_DELAY
            finally:
                self._write_started = None
                self._writing_unjournaled = 0

    def _take_batch(self) -> list[tuple[PendingReport, int | None]]:
        with self._queue_lock:
            hurry = self._stopping or self._flush_requested
            if not self._queue and not hurry:
                self._queue_lock.wait(self._until_deferred_due(1.0))
            hurry = self._stopping or self._flush_requested
            if self._queue and not hurry and len(self._queue) < self.batch_size:
                # Every report is safe in the journal already: let a batch build up, so one
                # transaction serves many tasks (a pool process runs one task at a time).
                self._queue_lock.wait(self.batch_delay)
            self._flush_requested = False
            taken = self._queue[: self.batch_size]
            del self._queue[: self.batch_size]
            taken += self._due_deferred(hurry or self._stopping, self.batch_size - len(taken))
            committed = self._journal.committed
            batch: list[tuple[PendingReport, int | None]] = []
            for item, offset in taken:
                if offset is None:
                    if self._unwritten.get(item.key) is not item:
                        continue  # a later report absorbed it
                    del self._unwritten[item.key]
                    self._writing_unjournaled += 1
                elif offset <= committed:
                    continue  # written already, by a replay of the journal
                batch.append((item, offset))
        return batch

    def _until_deferred_due(self, longest: float) -> float:
        if not self._deferred:
            return longest
        return min(longest, max(self._deferred[0][0] - time.monotonic(), 0.0))

    def _due_deferred(self, all_of_them: bool, limit: int) -> list[tuple[PendingReport, None]]:
        """The waiting `queued` reports whose delay is over (all of them for a flush)."""
        due: list[tuple[PendingReport, None]] = []
        now = time.monotonic()
        deferred = self._deferred
        while deferred and len(due) < limit and (all_of_them or deferred[0][0] <= now):
            due.append((deferred.popleft()[1], None))
        return due

    def _requeue_unjournaled(self, batch: list[tuple[PendingReport, int | None]]) -> None:
        """Memory-only reports of a batch that was not written wait again (unless a later
        report of their execution came meanwhile)."""
        with self._queue_lock:
            waiting = [
                (item, None)
                for item, offset in batch
                if offset is None and item.key not in self._unwritten
            ]
            for item, _ in waiting:
                self._unwritten[item.key] = item
            self._queue[:0] = waiting
            self._writing_unjournaled = 0

    def _replay_journal(self) -> None:
        """Write the journal from its committed offset on; back to normal once caught up."""
        while True:
            items = self._journal.read_uncommitted(self.batch_size)
            if not items:
                break
            self._writer.write([item for item, _ in items])
            self._journal.commit(items[-1][1])
        with self._queue_lock:
            committed = self._journal.committed
            self._queue = [
                (item, offset)
                for item, offset in self._queue
                if offset is None or offset > committed
            ]
            if self._overflow:  # more went to the journal only meanwhile: another round
                self._overflow = False
                return
            self._replaying = False
        log.info("flowworker: the journal is replayed; writing from memory again")

    def _note_error(self, message: str, exc: BaseException, exc_info: bool = False) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("flowworker: %s: %s", message, self.stats.last_error, exc_info=exc_info)


def lower_priority(increment: int) -> None:
    """Lower the calling thread's CPU priority by `increment` (Linux schedules threads
    individually): the writer's work is in the journal and memory already, so it can wait
    while the tasks and Celery's own loop need the CPU; it still gets its fair share
    (nice 5 weighs a third of nice 0) and never starves."""
    if increment <= 0:
        return
    try:
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + increment))
    except OSError as exc:  # not Linux, or not allowed: run at the process's priority
        log.debug("flowworker: could not lower the writer thread's priority: %s", exc)
