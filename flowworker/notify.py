"""Publishing status notifications on Redis pub/sub without ever being in a task's way.

`StatusNotifier.publish_changes` is what a signal handler or an API endpoint calls after
its transaction commits: it puts the results on a bounded in-memory queue and returns. A
daemon thread serializes them and publishes bursts in one pipelined round trip. When Redis
is slow or down the queue fills, further notifications are dropped and counted (logged once
per interval), and the thread reconnects with backoff by itself. Notifications are hints;
the database stays the truth (see docs/notifications.md).

Threads and sockets do not survive `fork` (Celery's prefork pool forks after the main
process may have built the notifier), so a notifier used in a child process starts over
with its own queue, thread and connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from flowworker.notification import DEFAULT_CHANNEL_PREFIX
from flowworker.publisher import RedisPublisher, redacted
from persistence.errors import ConfigurationError
from persistence.reports import UpsertResult

log = logging.getLogger(__name__)

# Put on the queue by close() to wake the thread at once; never published.
_WAKE_UP: Any = object()


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Counters of this process's notifier (a forked child starts from zero)."""

    published: int
    dropped: int
    errors: int
    queue_depth: int
    last_error: str | None
    connected: bool


class StatusNotifier:
    def __init__(
        self,
        redis_url: str,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        queue_size: int = 10_000,
        *,
        batch_size: int = 500,
        drop_log_interval: float = 30.0,
        reconnect_delay: float = 0.05,
        reconnect_delay_max: float = 5.0,
        socket_timeout: float = 5.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ConfigurationError(
                f"queue_size and batch_size must be at least 1 (got {queue_size}, {batch_size})"
            )
        self.redis_url = redis_url
        self.channel_prefix = channel_prefix
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._drop_log_interval = drop_log_interval
        self._reconnect_delay = reconnect_delay
        self._reconnect_delay_max = reconnect_delay_max
        self._socket_timeout = socket_timeout
        self._closed = False
        self._adopt_process()
        _NOTIFIERS.add(self)

    def _adopt_process(self) -> None:
        """Fresh queue, lock, thread and counters owned by the current process."""
        self._pid = os.getpid()
        self._queue: queue.Queue[UpsertResult] = queue.Queue(self._queue_size)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._close_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._published = 0
        self._dropped = 0
        self._errors = 0
        self._in_flight = 0
        self._last_error: str | None = None
        self._connected = False

    def publish_changes(self, results: Iterable[UpsertResult]) -> None:
        """Hand the changed results over for publishing; never blocks, never raises."""
        try:
            if self._pid != os.getpid():
                self._adopt_process()
            if self._thread is None:
                self._start_thread()
            for result in results:
                if not result.changed:
                    continue
                if self._closed:
                    self._count_drop()
                    continue
                try:
                    self._queue.put_nowait(result)
                except queue.Full:
                    self._count_drop()
        except Exception as exc:  # a notification is never worth failing a task over
            self._errors += 1
            self._last_error = f"publish_changes: {exc!r}"

    def stats(self) -> NotifierStats:
        return NotifierStats(
            published=self._published,
            dropped=self._dropped,
            errors=self._errors,
            queue_depth=self._queue.qsize() + self._in_flight,
            last_error=self._last_error,
            connected=self._connected,
        )

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (waiting at most `timeout` seconds), then stop."""
        self._closed = True
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        self._close_deadline = time.monotonic() + timeout
        self._stopping.set()
        # A full queue means the thread is busy draining and will see the stop flag anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE_UP)
        thread.join(timeout)

    def _count_drop(self) -> None:
        with self._lock:
            self._dropped += 1

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(
                target=self._run, name=f"flowworker-notifier-{self._pid}", daemon=True
            )
            thread.start()
            self._thread = thread

    # -- the background thread ------------------------------------------------------------

    def _run(self) -> None:
        publisher = RedisPublisher(self.redis_url, self.channel_prefix, self._socket_timeout)
        delay = self._reconnect_delay
        outage_started: float | None = None
        drops_logged, last_drop_log = 0, time.monotonic()
        pending: list[UpsertResult] = []
        try:
            while not self._must_stop(pending):
                drops_logged, last_drop_log = self._log_drops(drops_logged, last_drop_log)
                try:
                    if not self._connected:
                        # Connect before draining, so that while Redis is down the queue
                        # (not a private batch) holds the backlog and drops stay exact.
                        publisher.ping()
                        self._connected = True
                        if outage_started is not None:
                            log.info(
                                "notifications resumed: Redis %s reachable again after %.1f s",
                                redacted(self.redis_url),
                                time.monotonic() - outage_started,
                            )
                        outage_started, delay = None, self._reconnect_delay
                    if not pending:
                        pending = self._take_batch()
                        self._in_flight = len(pending)
                    if pending:
                        publisher.publish_results(pending)
                        self._published += len(pending)
                        pending, self._in_flight = [], 0
                except (redis.RedisError, OSError) as exc:
                    self._errors += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    self._connected = False
                    publisher.disconnect()
                    if outage_started is None:
                        outage_started = time.monotonic()
                        log.warning(
                            "cannot publish notifications to Redis %s (%s); queueing up to "
                            "%d, then dropping; retrying in the background",
                            redacted(self.redis_url),
                            self._last_error,
                            self._queue_size,
                        )
                    self._stopping.wait(min(delay, self._time_left()))
                    delay = min(delay * 2, self._reconnect_delay_max)
                except Exception as exc:  # a bug must not kill the thread nor loop on a batch
                    log.exception("dropping %d notifications that failed to publish", len(pending))
                    self._errors += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    with self._lock:
                        self._dropped += len(pending)
                    pending, self._in_flight = [], 0
            self._drop_unpublished(pending)
            self._log_drops(drops_logged, last_drop_log, force=True)
        finally:
            publisher.close()

    def _drop_unpublished(self, pending: list[UpsertResult]) -> None:
        """Closed before everything went out (Redis unreachable until the deadline)."""
        left = len(pending)
        with contextlib.suppress(queue.Empty):
            while True:
                left += self._queue.get_nowait() is not _WAKE_UP
        self._in_flight = 0
        if left:
            with self._lock:
                self._dropped += left
            log.warning("notifier closed with %d notifications unpublished", left)

    def _must_stop(self, pending: list[UpsertResult]) -> bool:
        if not self._stopping.is_set():
            return False
        return self._time_left() <= 0 or (not pending and self._queue.empty())

    def _time_left(self) -> float:
        return max(0.0, self._close_deadline - time.monotonic())

    def _take_batch(self) -> list[UpsertResult]:
        """Up to batch_size results; waits briefly for the first so the loop stays live."""
        batch: list[UpsertResult] = []
        try:
            item = self._queue.get(timeout=0.5)
            while True:
                if item is not _WAKE_UP:
                    batch.append(item)
                if len(batch) >= self._batch_size:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return batch

    def _log_drops(self, logged: int, last_log: float, force: bool = False) -> tuple[int, float]:
        """Log drops at most once per interval; returns the new (logged, last_log)."""
        now = time.monotonic()
        dropped = self._dropped
        if dropped == logged or (now - last_log < self._drop_log_interval and not force):
            return logged, last_log
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=now - last_log)
        log.warning(
            "dropped %d notifications since %s (queue of %d full or notifier closed); "
            "the database has every status, clients reconcile from it",
            dropped - logged,
            since.isoformat(timespec="seconds"),
            self._queue_size,
        )
        return dropped, now


# Every live notifier, so that a forked child resets them before any of its threads runs.
_NOTIFIERS: weakref.WeakSet[StatusNotifier] = weakref.WeakSet()


def _adopt_after_fork() -> None:
    for notifier in list(_NOTIFIERS):
        notifier._adopt_process()


os.register_at_fork(after_in_child=_adopt_after_fork)
