"""Writes the reports of one process to the database, never in a task's way.

One writer thread per process owns every database write, in report order:

* non-terminal reports (queued, running) are batched: written within `batch_delay`, or with
  the next terminal report, in one transaction;
* a terminal report (completed, failed, cancelled) is durable before `record` returns: the
  caller waits until its batch is committed, or, when the database is down or slow
  (`durable_timeout`), until the report is fsync'ed into the local spool;
* while the spool holds anything, new reports queue behind it, and the writer replays the
  spool, in order, as soon as the database answers again.

Nothing here raises into a task: errors are logged with context and counted in `stats`.
Connections and the thread are made per process, after fork (Celery's prefork pool).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from flowworker.config import Settings
from flowworker.pending import PendingReport
from flowworker.spool import Spool
from persistence.database import create_database_engine, transaction
from persistence.errors import FlowworkerError, UnknownFlowExecution
from persistence.hierarchy import (
    AdHocFlowExecution,
    allocate_task_execution_idx,
    ensure_flow_executions,
    ensure_organization,
)
from persistence.reports import UpsertResult
from persistence.upsert import upsert_task_executions

log = logging.getLogger(__name__)

_KNOWN_FLOW_EXECUTIONS_MAX = 50_000


class Notifier(Protocol):
    def publish_changes(self, results: list[UpsertResult]) -> None: ...


@dataclass
class RecorderStats:
    written: int = 0
    spooled: int = 0
    rejected: int = 0
    errors: int = 0
    last_write_at: float | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)


class Recorder:
    def __init__(
        self,
        settings: Settings,
        *,
        notifier_factory: Callable[[Settings], Notifier | None] | None = None,
        batch_delay: float = 0.02,
        batch_size: int = 500,
        durable_timeout: float = 2.0,
    ) -> None:
        self.settings = settings
        self.batch_delay = batch_delay
        self.batch_size = batch_size
        self.durable_timeout = durable_timeout
        self.stats = RecorderStats()
        self._notifier_factory = notifier_factory
        self._pid: int | None = None
        self._init_lock = threading.Lock()

    # -- per-process state, made lazily so that a fork gets its own ---------------------

    def _ensure_process(self) -> None:
        if self._pid == os.getpid():
            return
        with self._init_lock:
            if self._pid == os.getpid():
                return
            self._engine: Engine = create_database_engine(
                self.settings.database_url,
                json_max_bytes=self.settings.json_max_bytes,
                pool_size=2,
            )
            self._spool = Spool(
                self.settings.spool_dir, json_max_bytes=self.settings.json_max_bytes
            )
            self._notifier = (
                self._notifier_factory(self.settings) if self._notifier_factory else None
            )
            self._queue: list[tuple[PendingReport, _Waiter | None]] = []
            self._queue_lock = threading.Condition()
            self._busy_since: float | None = None
            self._known_flow_executions: dict[uuid.UUID, None] = {}
            self._organization_id: uuid.UUID | None = None
            self._stopping = False
            self.stats = RecorderStats()
            self._thread = threading.Thread(
                target=self._run, name="flowworker-recorder", daemon=True
            )
            self._pid = os.getpid()
            self._thread.start()

    @property
    def engine(self) -> Engine:
        self._ensure_process()
        return self._engine

    # -- what signal handlers call --------------------------------------------------------

    def record(self, item: PendingReport) -> None:
        """Hand a report over. Terminal reports return once durable (bounded wait)."""
        self._ensure_process()
        durable = item.report.status.is_terminal
        waiter = _Waiter() if durable else None
        with self._queue_lock:
            self._queue.append((item, waiter))
            if durable or len(self._queue) >= self.batch_size:
                self._queue_lock.notify()
        if waiter is None:
            return
        busy_since = self._busy_since
        stuck = busy_since is not None and time.monotonic() - busy_since > self.durable_timeout
        if stuck or not waiter.done.wait(self.durable_timeout):
            # The database hangs (or the writer is stuck on it): make the report durable
            # here. The writer still writes it later; a repeated report is a no-op.
            self._spool_items([item], reason="database did not answer in time")

    def default_organization_id(self) -> uuid.UUID:
        """The organization of tasks no flow started (created on first use)."""
        self._ensure_process()
        if self._organization_id is None:
            with transaction(self._engine) as connection:
                self._organization_id = ensure_organization(connection, self.settings.organization)
        return self._organization_id

    def allocate_idx(
        self,
        flow_execution_id: uuid.UUID,
        task_name: str,
        organization_id: uuid.UUID,
        *,
        ad_hoc: AdHocFlowExecution | None = None,
        at_least: int = 0,
    ) -> int:
        """The next task_execution_idx of `task_name` in the flow execution (one round trip)."""
        self._ensure_process()
        with transaction(self._engine, organization_id) as connection:
            if ad_hoc is not None and ad_hoc.id not in self._known_flow_executions:
                ensure_flow_executions(connection, [ad_hoc])
            idx = allocate_task_execution_idx(
                connection, flow_execution_id, task_name, at_least=at_least
            )
        if ad_hoc is not None:
            self._remember_flow_executions([ad_hoc.id])
        return idx

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything handed over so far; True when it is durable within `timeout`."""
        if self._pid != os.getpid():
            return True
        waiter = _Waiter()
        with self._queue_lock:
            self._queue.append((_FLUSH, waiter))
            self._queue_lock.notify()
        return waiter.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._pid != os.getpid():
            return
        self.flush(timeout)
        self._stopping = True
        with self._queue_lock:
            self._queue_lock.notify()
        self._spool.close()

    def backlog(self) -> int:
        self._ensure_process()
        return self._spool.count_backlog()

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        retry_at = 0.0
        while not self._stopping:
            batch = self._take_batch()
            try:
                if self._spool.has_backlog():
                    if batch:
                        self._spool_items([item for item, _ in batch], reason=None)
                    if time.monotonic() >= retry_at:
                        self._busy_since = time.monotonic()
                        self._spool.drain(self._write)
                        retry_at = 0.0
                elif batch:
                    self._busy_since = time.monotonic()
                    self._write_or_spool([item for item, _ in batch])
            except (OperationalError, DBAPIError) as exc:
                retry_at = time.monotonic() + 2.0
                self._note_error("database unavailable, replaying the spool later", exc)
            except Exception as exc:  # never let the writer die
                retry_at = time.monotonic() + 2.0
                self._note_error("unexpected error in the recorder", exc, exc_info=True)
            finally:
                self._busy_since = None
                for _, waiter in batch:
                    if waiter is not None:
                        waiter.done.set()

    def _take_batch(self) -> list[tuple[PendingReport, _Waiter | None]]:
        with self._queue_lock:
            if not self._queue:
                self._queue_lock.wait(1.0)
            elif not any(waiter for _, waiter in self._queue):
                # only non-terminal reports: give a terminal one a moment to join them
                self._queue_lock.wait(self.batch_delay)
            batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        return batch

    def _write_or_spool(self, items: list[PendingReport]) -> None:
        items = [item for item in items if item is not _FLUSH]
        if not items:
            return
        try:
            self._write(items)
        except (OperationalError, DBAPIError) as exc:
            self._note_error("database unavailable; keeping reports in the spool", exc)
            self._spool_items(items, reason=None)

    def _write(self, items: list[PendingReport]) -> None:
        """Write `items` (one transaction per organization) and notify after commit."""
        items = [item for item in items if item is not _FLUSH]
        by_organization: dict[uuid.UUID, list[PendingReport]] = {}
        for item in items:
            by_organization.setdefault(item.organization_id, []).append(item)
        for organization_id, group in by_organization.items():
            try:
                results = self._write_group(organization_id, group)
            except (UnknownFlowExecution, IntegrityError):
                results = self._write_one_by_one(organization_id, group)
            self.stats.written += len(group)
            self.stats.last_write_at = time.time()
            changed = [result for result in results if result.changed]
            if changed and self._notifier is not None:
                self._notifier.publish_changes(changed)

    def _write_group(
        self, organization_id: uuid.UUID, group: list[PendingReport]
    ) -> list[UpsertResult]:
        new_flow_executions = [
            item.ad_hoc
            for item in group
            if item.ad_hoc is not None and item.ad_hoc.id not in self._known_flow_executions
        ]
        with transaction(self._engine, organization_id) as connection:
            if new_flow_executions:
                ensure_flow_executions(connection, new_flow_executions)
            results = upsert_task_executions(connection, [item.report for item in group])
        self._remember_flow_executions(execution.id for execution in new_flow_executions)
        return results

    def _write_one_by_one(
        self, organization_id: uuid.UUID, group: list[PendingReport]
    ) -> list[UpsertResult]:
        results: list[UpsertResult] = []
        for item in group:
            try:
                results += self._write_group(organization_id, [item])
            except (FlowworkerError, IntegrityError) as exc:
                self.stats.rejected += 1
                log.error(
                    "flowworker could not record %s[%d] -> %s: %s",
                    item.report.task_name,
                    item.report.task_execution_idx,
                    item.report.status,
                    exc,
                )
        return results

    def _remember_flow_executions(self, ids: Any) -> None:
        known = self._known_flow_executions
        for flow_execution_id in ids:
            known[flow_execution_id] = None
        while len(known) > _KNOWN_FLOW_EXECUTIONS_MAX:
            del known[next(iter(known))]

    def _spool_items(self, items: list[PendingReport], reason: str | None) -> None:
        items = [item for item in items if item is not _FLUSH]
        if not items:
            return
        try:
            self.stats.spooled += self._spool.append(items)
        except OSError as exc:
            self._note_error("could not write the spool; reports lost", exc)
        if reason:
            log.warning("flowworker spooled %d report(s): %s", len(items), reason)

    def _note_error(self, message: str, exc: BaseException, exc_info: bool = False) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("flowworker: %s: %s", message, self.stats.last_error, exc_info=exc_info)


_FLUSH: Any = object()
