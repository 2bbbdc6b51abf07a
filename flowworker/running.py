"""Running reports held back for `running_write_delay`: most tasks finish sooner.

A task that finishes within the delay is recorded once, by its finished report, which says
when it started and what it was called with: one report built, one journal line, one row
write, where writing `running` at the start would cost two of each. A task still running
when the delay is over has its `running` report written then, by a watch thread of the
process it runs in, so that a long task shows as running without the short ones paying for
it. (Only `running` waits: every terminal report is journaled before its handler returns.)
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# guards starting a process's watch thread; made anew in a fork's child, where a copy could
# be held by a thread that did not come along
_begin_lock = threading.Lock()


def _new_begin_lock() -> None:
    global _begin_lock
    _begin_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_begin_lock)


@dataclass(slots=True)
class Started:
    """What `task_prerun` knew of a task that started: enough to write its `running`
    report later, or to fold it into the finished one."""

    task_name: str
    request: Any
    input: Any
    at: dt.datetime
    since: float  # time.monotonic() at the start
    #: writing its `running` report failed: the finished report says when it started
    failed: bool = False


class RunningTasks:
    """The tasks of this process whose `running` report waits, by their request."""

    def __init__(self, delay: float, write_running: Callable[[Started], None]) -> None:
        self.delay = delay
        self._write_running = write_running
        self._started: dict[int, Started] = {}
        # held while a `running` report is written, so that the finished report of the
        # same task never overtakes it
        self._lock = threading.Lock()
        self._watching_pid: int | None = None
        self._closed = threading.Event()

    def started(self, started: Started) -> None:
        if self._watching_pid != os.getpid():  # the first task of this process (or fork)
            self._begin()
        # keyed by the request object, which `started` holds alive: its id stays unique
        self._started[id(started.request)] = started

    def finished(self, request: Any) -> Started | None:
        """What the task's start left here; None when its `running` report was written (the
        finished one then goes on its own) or the task did not start in this process (a
        revoke seen by the main process)."""
        if self._watching_pid != os.getpid():
            return None
        with self._lock:
            return self._started.pop(id(request), None)

    def _begin(self) -> None:
        with _begin_lock:
            if self._watching_pid == os.getpid():
                return
            # a fork starts afresh: the parent's tasks are not this process's, and its lock
            # may have been held by a thread that did not come along
            self._started = {}
            self._lock = threading.Lock()
            self._closed = threading.Event()
            thread = threading.Thread(target=self._run, name="flowworker-running", daemon=True)
            thread.start()
            self._watching_pid = os.getpid()

    def close(self) -> None:
        """Stop the watch (the plugin is replaced or uninstalled)."""
        self._closed.set()

    def _run(self) -> None:
        interval = max(self.delay / 2, 0.01)
        while not self._closed.wait(interval):
            try:
                self.write_overdue()
            except Exception:  # never let the watch die
                log.exception("flowworker: the watch of running tasks failed")

    def write_overdue(self, now: float | None = None) -> None:
        """Write the `running` report of each task started more than `delay` ago, and
        forget the task: its finished report goes on its own (and one that never comes,
        from a task that raised Ignore or Reject, holds nothing here)."""
        now = time.monotonic() if now is None else now
        overdue = [
            started
            for started in list(self._started.values())
            if not started.failed and now - started.since >= self.delay
        ]
        for started in overdue:
            key = id(started.request)
            with self._lock:  # the finished report waits: it must not overtake this one
                if self._started.get(key) is not started:
                    continue  # finished meanwhile: its finished report says it all
                try:
                    self._write_running(started)
                except Exception:
                    started.failed = True  # not again: the finished report says it all
                    log.exception("flowworker: writing the running report of a task failed")
                    continue
                del self._started[key]
