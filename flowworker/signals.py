"""Celery signal handlers: each turns one Celery event into one call of the recorder.

Handlers are thin and fail-safe: any error is logged with `exc_info` and counted, never
raised into the task (Celery would log it anyway, but a recorder must not even add noise to a
task's own failure path).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Retry

from flowworker import identity
from flowworker.headers import ExecutionIdentity, published_identity
from flowworker.pending import PendingReport, journal_line
from flowworker.plugin import Plugin, active_plugin
from flowworker.redact import task_input
from flowworker.running import Started
from persistence.reports import SYSTEM_ACTOR, TaskReport
from persistence.status import ExecutionStatus

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])


def fail_safe(handler: F) -> F:
    @functools.wraps(handler)
    def guarded(*args: Any, **kwargs: Any) -> None:
        plugin = active_plugin()
        if plugin is None:
            return
        try:
            handler(plugin, *args, **kwargs)
        except Exception:
            plugin.recorder.stats.errors += 1
            log.exception("flowworker: %s failed; the task is not affected", handler.__name__)

    return guarded  # type: ignore[return-value]


@fail_safe
def record_task_published(
    plugin: Plugin,
    sender: str | None = None,
    body: Any = None,
    headers: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    if headers is None or not plugin.should_record(headers.get("task") or sender):
        return
    assigned = identity.assign_at_publish(plugin, headers)
    if assigned is None:
        return
    args, kwargs = _arguments(body)
    report = TaskReport(
        flow_execution_id=assigned.flow_execution_id,
        task_name=assigned.task_name,
        task_execution_idx=assigned.task_execution_idx,
        status=ExecutionStatus.QUEUED,
        input=task_input(args, kwargs, plugin.settings.redact_keys),
        celery_task_id=_bounded(headers.get("id")),
        attempt=int(headers.get("retries") or 0),
    )
    # Not journaled: losing it with this process loses nothing the worker does not state.
    # Held back for `queued_write_delay` unless the task is scheduled for later: one that
    # starts before then needs no row written here (the worker's report says when it was
    # queued), one that waits for its ETA is queued by design and shown as such at once.
    item = _pending(report, assigned, headers.get("root_id"), hold=not headers.get("eta"))
    plugin.recorder.record(item, durable=False)


@fail_safe
def record_task_started(
    plugin: Plugin, sender: Task | None = None, task: Task | None = None, **kwargs: Any
) -> None:
    task = task or sender
    if task is None or not plugin.should_record(task.name, task):
        return
    started = Started(
        task.name,
        task.request,
        # taken now: the task may change its arguments as it runs
        task_input(kwargs.get("args"), kwargs.get("kwargs"), plugin.settings.redact_keys),
        dt.datetime.now(dt.UTC),
        time.monotonic(),
    )
    if plugin.running.delay > 0:
        plugin.running.started(started)  # most tasks finish before it is due
    else:
        write_running(plugin, started)


def write_running(plugin: Plugin, started: Started) -> None:
    """The `running` report of a task that started (at once, or once it has run for
    `running_write_delay`: `flowworker.running`)."""
    request = started.request
    assigned = identity.identity_of(plugin, request, started.task_name)
    if assigned is None:
        return
    # The publisher's `queued` report travels on its own and may arrive after this one; the
    # report says when the message was published too, so the record's history and the live
    # notifications read queued -> running -> ... in order whichever lands first. It is not
    # journaled: the finished report absorbs it while it waits (`Recorder.record`).
    running = _report(
        assigned,
        request,
        ExecutionStatus.RUNNING,
        at=started.at,
        input=started.input,
        queued_at=_queued_at(assigned.published_at, started),
    )
    plugin.recorder.record(_pending(running, assigned, request.root_id), durable=False)


@fail_safe
def record_task_succeeded(
    plugin: Plugin, sender: Task | None = None, result: Any = None, **_: Any
) -> None:
    _record_finished(plugin, sender, ExecutionStatus.COMPLETED, output=result)


@fail_safe
def record_task_failed(
    plugin: Plugin,
    sender: Task | None = None,
    exception: BaseException | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    if isinstance(exception, Retry):
        return  # task_retry reports it
    _record_finished(plugin, sender, ExecutionStatus.FAILED, error=error_of(exception, einfo))


@fail_safe
def record_task_retried(
    plugin: Plugin,
    sender: Task | None = None,
    request: Any = None,
    reason: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    """This attempt failed; the retry itself is a new execution, queued at its publish."""
    cause = reason.exc if isinstance(reason, Retry) and reason.exc is not None else reason
    if isinstance(cause, BaseException):
        error = error_of(cause, einfo)
    else:
        error = {"message": str(reason), "type": "Retry", "traceback": ""}
    error["retry"] = str(reason)
    _record_finished(plugin, sender, ExecutionStatus.FAILED, error=error, request=request)


@fail_safe
def record_task_revoked(
    plugin: Plugin,
    sender: Task | None = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    reason = "expired" if expired else ("terminated" if terminated else "revoked")
    error = {
        "message": f"task {reason}" + (f" (signal {signum})" if signum else ""),
        "type": "Revoked",
    }
    _record_finished(plugin, sender, ExecutionStatus.CANCELLED, error=error, request=request)


def _record_finished(
    plugin: Plugin,
    task: Task | None,
    status: ExecutionStatus,
    *,
    output: Any = None,
    error: Any = None,
    request: Any = None,
) -> None:
    if task is None or not plugin.should_record(task.name, task):
        return
    request = request if request is not None else task.request
    # a task that finished before its `running` report was due: this report says it all
    started = plugin.running.finished(request)
    if _journal_finished(plugin, request, status, started, output, error):
        return
    assigned = identity.identity_of(plugin, request, task.name)
    if assigned is None:
        return
    # when it was queued too: the publisher's `queued` report may never be written (it
    # waits `queued_write_delay`), and a task revoked before it started has no other
    start = {} if started is None else {"input": started.input, "started_at": started.at}
    report = _report(
        assigned,
        request,
        status,
        output=output,
        error=error,
        queued_at=_queued_at(assigned.published_at, started),
        **start,
    )
    item = _pending(
        report, assigned, getattr(request, "root_id", None), reports=1 if started is None else 2
    )
    plugin.recorder.record(item)  # journaled on return
    plugin.announce_terminal(item)


def _journal_finished(
    plugin: Plugin,
    request: Any,
    status: ExecutionStatus,
    started: Started | None,
    output: Any,
    error: Any,
) -> bool:
    """The common case in a worker's task process: a finished report whose identity the
    message carries, straight from the request to its journal line, without the report
    objects a writer thread or a terminal listener needs (the writer process validates the
    report as it reads the line). False when that does not apply; the general way then
    records it."""
    if plugin.terminal_listeners or not plugin.recorder.journals_only():
        return False
    published = published_identity(request)
    if published is None:
        return False
    flow_execution_id, task_name, idx, organization_id, ad_hoc, published_at = published
    now = time.time()
    reports = 1 if started is None else 2
    scalars = {
        "flow_execution_id": flow_execution_id,
        "task_name": task_name,
        "task_execution_idx": idx,
        "status": status.value,
        "at": dt.datetime.fromtimestamp(now, dt.UTC),
        "modified_by": SYSTEM_ACTOR,
        "celery_task_id": _bounded(getattr(request, "id", None)),
        "attempt": int(getattr(request, "retries", 0) or 0),
        "worker": _bounded(getattr(request, "hostname", None)),
        "queued_at": _queued_at(published_at, started),
        "started_at": started.at if started is not None else None,
        "organization_id": organization_id,
        "ad_hoc": ad_hoc,
        "ad_hoc_root_id": getattr(request, "root_id", None) if ad_hoc else None,
        "reports": reports,
        "hold": True,
    }
    task_input = started.input if started is not None else None
    line = journal_line(scalars, task_input, output, error, plugin.settings.json_max_bytes)
    plugin.recorder.record_line(line, reports)
    return True


def _report(
    assigned: ExecutionIdentity, request: Any, status: ExecutionStatus, **fields: Any
) -> TaskReport:
    return TaskReport(
        flow_execution_id=assigned.flow_execution_id,
        task_name=assigned.task_name,
        task_execution_idx=assigned.task_execution_idx,
        status=status,
        celery_task_id=_bounded(getattr(request, "id", None)),
        attempt=int(getattr(request, "retries", 0) or 0),
        worker=_bounded(getattr(request, "hostname", None)),
        **fields,
    )


def _queued_at(published_at: float | None, started: Started | None) -> dt.datetime | None:
    """When the message was published, if its headers say (else, for a task that started,
    when it started); never later than the task started, or than now: the publisher's
    clock may run ahead of this machine's."""
    if published_at is None:
        return None if started is None else started.at
    latest = started.at.timestamp() if started is not None else time.time()
    return dt.datetime.fromtimestamp(min(published_at, latest), dt.UTC)


def _bounded(value: Any, limit: int = 255) -> str | None:
    """Host names and task ids longer than their columns are cut, not refused: the record
    matters more than the tail of a name."""
    return None if value is None else str(value)[:limit]


def _pending(
    report: TaskReport,
    assigned: ExecutionIdentity,
    root_id: str | None,
    hold: bool = True,
    reports: int = 1,
) -> PendingReport:
    ad_hoc = identity.ad_hoc_flow_execution(assigned, root_id)
    return PendingReport(report, assigned.organization_id, ad_hoc, reports, hold)


def _arguments(body: Any) -> tuple[Any, Any]:
    # task protocol 2: (args, kwargs, embed); protocol 1: a dict
    if isinstance(body, tuple | list) and len(body) == 3:
        return body[0], body[1]
    if isinstance(body, dict):
        return body.get("args"), body.get("kwargs")
    return None, None


def error_of(exception: BaseException | None, einfo: Any) -> dict[str, Any]:
    """The spec's error structure: {message, type, traceback}."""
    return {
        "message": str(exception) if exception is not None else "unknown error",
        "type": type(exception).__name__ if exception is not None else "Error",
        "traceback": str(getattr(einfo, "traceback", "") or ""),
    }
