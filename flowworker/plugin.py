"""The installed plugin of this process: its settings, its recorder, what it records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowworker.config import Settings
from flowworker.database_writer import Notifier
from flowworker.pending import PendingReport
from flowworker.recorder import Recorder
from flowworker.running import RunningTasks, Started

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

#: Task option that opts a task out: ``@app.task(flowworker_record=False)``.
RECORD_OPTION = "flowworker_record"


class Plugin:
    def __init__(self, app: Celery | None, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.recorder = Recorder(settings, notifier_factory=make_notifier)
        #: tasks whose `running` report waits `running_write_delay` (`flowworker.running`)
        self.running = RunningTasks(settings.running_write_delay, self._write_running)
        #: called with each terminal report once it is journaled, in the process that
        #: recorded it; e.g. flows advance from here. Errors are logged.
        self.terminal_listeners: list[Callable[[PendingReport], None]] = []

    def add_terminal_listener(self, listener: Callable[[PendingReport], None]) -> None:
        if listener not in self.terminal_listeners:
            self.terminal_listeners.append(listener)

    def announce_terminal(self, item: PendingReport) -> None:
        """Tell the listeners; each decides whether it needs the report in the database
        first (`recorder.flush`, bounded) — the flow engine does, and falls back to an
        advance message when the database is slow or away."""
        for listener in list(self.terminal_listeners):
            try:
                listener(item)
            except Exception:
                log.exception("flowworker: terminal listener %r failed", listener)

    def _write_running(self, started: Started) -> None:
        from flowworker.signals import write_running  # signals import this module

        try:
            write_running(self, started)
        except Exception:
            self.recorder.stats.errors += 1
            raise

    def should_record(self, task_name: str | None, task: Any = None) -> bool:
        """Celery's own tasks (celery.*) and opted-out tasks are not recorded."""
        if not task_name or task_name.startswith("celery."):
            return False
        if task is None and self.app is not None:
            task = self.app.tasks.get(task_name)
        return getattr(task, RECORD_OPTION, True) is not False


def make_notifier(settings: Settings) -> Notifier | None:
    if not settings.redis_url:
        return None
    from flowworker.notify import StatusNotifier  # only processes that notify load redis-py

    notifier: Notifier = StatusNotifier(settings.redis_url, channel_prefix=settings.channel_prefix)
    return notifier


_active: Plugin | None = None


def active_plugin() -> Plugin | None:
    return _active


def activate(plugin: Plugin | None) -> None:
    global _active
    _active = plugin
