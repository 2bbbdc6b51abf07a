"""Marking `failed` the runs a dead worker left `running`, and never a live one.

A record stays `running` for good when its whole worker dies (SIGKILL, OOM, power loss):
nobody is left to send `task_failure`. The reaper finds records `running` for longer than a
timeout and asks the live workers (remote control `ping` and `active`) what they really run.
A record is reaped only when its worker does not answer, or answers but neither runs nor
holds the task and has no reports waiting for the database (`flowworker_stats`). The write
goes through the guarded upsert, so a record that completed meanwhile is never touched
(`running -> failed` is legal; `completed -> failed` is not).

Caveats (see docs/operations.md): a worker with the `solo` pool cannot answer while its task
runs, so its timeout must exceed its longest task; and a task whose message waits in the
broker for redelivery (`acks_late`) looks dead until a worker takes it again, so the timeout
must exceed the broker's redelivery delay (Redis: `visibility_timeout`).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import shared_task
from sqlalchemy import Engine

from flowworker.config import Settings
from persistence.database import create_database_engine, transaction
from persistence.errors import FlowworkerError
from persistence.reports import TaskReport, UpsertResult, utcnow
from persistence.retention import (
    RunningRecord,
    fetch_organization_ids,
    fetch_running_task_executions,
)
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = dt.timedelta(minutes=10)
REAPER_ACTOR = "flowworker-reaper"
REAP_TASK_NAME = "flowworker.reap_stale_runs"


class WorkersUnreachable(FlowworkerError):
    """The broker could not be asked who is alive: reaping would be a guess, so nothing is."""


@dataclass(frozen=True, slots=True)
class LiveWorkers:
    """What the workers answered: who responded, and which task ids they hold."""

    responding: frozenset[str]
    task_ids: frozenset[str]
    #: workers with reports not yet in the database (their records may be about to move)
    backlogged: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StaleRun:
    organization_id: uuid.UUID
    record: RunningRecord
    reason: str


@dataclass
class ReapReport:
    """What one reaper pass found and did."""

    examined: int = 0
    spared: int = 0
    reaped: list[StaleRun] = field(default_factory=list)
    refused: list[StaleRun] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "spared_live": self.spared,
            "reaped": [_describe(run) for run in self.reaped],
            "finished_meanwhile": [_describe(run) for run in self.refused],
        }


def _describe(run: StaleRun) -> dict[str, Any]:
    record = run.record
    return {
        "id": str(record.id),
        "task_name": record.task_name,
        "task_execution_idx": record.task_execution_idx,
        "celery_task_id": record.celery_task_id,
        "worker": record.worker,
        "reason": run.reason,
    }


def fetch_live_workers(app: Celery, timeout: float = 2.0) -> LiveWorkers:
    """Ask every worker, once, who is there and which tasks it runs, holds or has scheduled.

    Reserved and scheduled ids count as alive too: a redelivered `acks_late` message lands
    on the record its first delivery left `running`, and will finish it.
    """
    try:
        inspect = app.control.inspect(timeout=timeout)
        replies = [
            inspect.active() or {},
            inspect.reserved() or {},
            inspect.scheduled() or {},
        ]
    except Exception as exc:
        raise WorkersUnreachable(
            f"cannot ask the workers which tasks they run ({type(exc).__name__}: {exc}); "
            "is the broker reachable? nothing was reaped"
        ) from exc
    responding: set[str] = set()
    task_ids: set[str] = set()
    for reply in replies:
        for hostname, entries in reply.items():
            responding.add(hostname)
            for entry in entries or []:
                request = entry.get("request", entry)  # `scheduled` wraps the request
                if request.get("id"):
                    task_ids.add(str(request["id"]))
    return LiveWorkers(frozenset(responding), frozenset(task_ids))


def _ask_again(app: Celery, live: LiveWorkers, silent: set[str], timeout: float) -> LiveWorkers:
    """A busy worker may miss the first deadline on a loaded machine: give the silent ones
    a second, longer chance before calling them dead."""
    try:
        replies = app.control.ping(destination=sorted(silent), timeout=timeout * 3) or []
    except Exception as exc:
        raise WorkersUnreachable(f"cannot ping the workers ({exc}); nothing was reaped") from exc
    answered = {hostname for reply in replies for hostname in reply}
    if not answered:
        return live
    again = fetch_live_workers(app, timeout * 3)
    return LiveWorkers(
        live.responding | answered | again.responding, live.task_ids | again.task_ids
    )


def _with_backlogs(app: Celery, live: LiveWorkers, hosts: set[str], timeout: float) -> LiveWorkers:
    """Which of `hosts` still hold reports the database has not taken (`flowworker_stats`):
    a worker replaying its journal after a long database outage may be about to finish
    exactly the records that look stale."""
    from flowworker.control import COMMAND

    try:
        replies = app.control.broadcast(
            COMMAND, destination=sorted(hosts), reply=True, timeout=timeout
        )
    except Exception as exc:
        raise WorkersUnreachable(f"cannot ask the workers ({exc}); nothing was reaped") from exc
    backlogged = set()
    for reply in replies or []:
        for hostname, stats in reply.items():
            totals = stats.get("totals") if isinstance(stats, dict) else None
            if totals and (totals.get("backlog_bytes") or totals.get("journal_lines")):
                backlogged.add(hostname)
    return LiveWorkers(live.responding, live.task_ids, frozenset(backlogged))


def judge(record: RunningRecord, live: LiveWorkers, now: dt.datetime) -> str | None:
    """Why `record` is stale, or None when a live worker still has it (or may still write
    it: its reports are not all in the database yet)."""
    if record.celery_task_id is not None and record.celery_task_id in live.task_ids:
        return None
    if record.worker is not None and record.worker in live.backlogged:
        return None
    since = record.started_at or record.updated_at
    seconds = int((now - since).total_seconds())
    worker = record.worker or "(unknown)"
    if record.worker is not None and record.worker in live.responding:
        return f"worker {worker} no longer runs this task; task reaped after {seconds} s"
    return f"worker {worker} stopped responding; task reaped after {seconds} s"


def find_stale_runs(
    engine: Engine,
    app: Celery,
    older_than: dt.timedelta = DEFAULT_TIMEOUT,
    *,
    inspect_timeout: float = 2.0,
) -> tuple[list[StaleRun], int]:
    """Records `running` for longer than `older_than` that no live worker has, and how many
    candidates were spared because a worker still has them."""
    now = utcnow()
    candidates: list[tuple[uuid.UUID, RunningRecord]] = []
    with engine.connect() as connection:
        organization_ids = fetch_organization_ids(connection)
    for organization_id in organization_ids:
        with transaction(engine, organization_id) as connection:
            candidates += [
                (organization_id, record)
                for record in fetch_running_task_executions(
                    connection, organization_id, now - older_than
                )
            ]
    if not candidates:
        return [], 0
    live = fetch_live_workers(app, inspect_timeout)
    silent = {r.worker for _, r in candidates if r.worker and r.worker not in live.responding}
    if silent:
        live = _ask_again(app, live, silent, inspect_timeout)
    answering = {r.worker for _, r in candidates if r.worker and r.worker in live.responding}
    if answering:
        live = _with_backlogs(app, live, answering, inspect_timeout)
    stale: list[StaleRun] = []
    for organization_id, record in candidates:
        reason = judge(record, live, now)
        if reason is not None:
            stale.append(StaleRun(organization_id, record, reason))
    return stale, len(candidates) - len(stale)


def reap_stale_runs(
    engine: Engine,
    app: Celery,
    older_than: dt.timedelta = DEFAULT_TIMEOUT,
    *,
    dry_run: bool = False,
    inspect_timeout: float = 2.0,
    settings: Settings | None = None,
) -> ReapReport:
    """Find stale runs and (unless `dry_run`) mark them failed; see the module docstring."""
    stale, spared = find_stale_runs(engine, app, older_than, inspect_timeout=inspect_timeout)
    report = ReapReport(examined=len(stale) + spared, spared=spared, dry_run=dry_run)
    if dry_run:
        report.reaped = stale
        return report
    changed: list[UpsertResult] = []
    by_organization: dict[uuid.UUID, list[StaleRun]] = {}
    for run in stale:
        by_organization.setdefault(run.organization_id, []).append(run)
    for organization_id, runs in by_organization.items():
        with transaction(engine, organization_id) as connection:
            results = upsert_task_executions(connection, [_failure_report(run) for run in runs])
        for run, result in zip(runs, results, strict=True):
            if result.changed:
                report.reaped.append(run)
                changed.append(result)
                log.warning(
                    "flowworker reaped %s[%d] (celery id %s): %s",
                    run.record.task_name,
                    run.record.task_execution_idx,
                    run.record.celery_task_id,
                    run.reason,
                )
            else:
                report.refused.append(run)  # it finished while we looked
    if changed and settings is not None and settings.redis_url:
        _publish_notifications(settings, changed)
    return report


def _failure_report(run: StaleRun) -> TaskReport:
    record = run.record
    return TaskReport(
        flow_execution_id=record.flow_execution_id,
        task_name=record.task_name,
        task_execution_idx=record.task_execution_idx,
        status=ExecutionStatus.FAILED,
        error={"message": run.reason, "type": "WorkerLost", "traceback": ""},
        modified_by=REAPER_ACTOR,
        celery_task_id=record.celery_task_id,
        attempt=record.attempt,
    )


def _publish_notifications(settings: Settings, changed: Iterable[UpsertResult]) -> None:
    try:
        from flowworker.notify import StatusNotifier

        notifier = StatusNotifier(settings.redis_url or "", channel_prefix=settings.channel_prefix)
        notifier.publish_changes(list(changed))
        notifier.close()
    except Exception:  # notifications are hints; the database already holds the truth
        log.warning("flowworker reaper: could not publish notifications", exc_info=True)


@shared_task(name=REAP_TASK_NAME, bind=True, ignore_result=True, flowworker_record=False)
def reap_stale_runs_task(self: Any, older_than_seconds: float = 600.0) -> dict[str, Any]:
    """The reaper as a Celery task, for beat; see docs/operations.md for the schedule."""
    from flowworker.plugin import active_plugin

    plugin = active_plugin()
    settings = plugin.settings if plugin is not None else Settings.load(self.app.conf)
    engine = create_database_engine(settings.database_url, pool_size=1)
    try:
        report = reap_stale_runs(
            engine, self.app, dt.timedelta(seconds=older_than_seconds), settings=settings
        )
    finally:
        engine.dispose()
    return report.to_dict()
