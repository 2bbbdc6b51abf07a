"""Iterating the status notifications of an organization or of one flow execution.

    with subscribe(redis_url, organization_id, flow_execution_id, engine=engine) as live:
        for notification in live:
            ...

Redis pub/sub delivers at most once: whatever is published while a subscriber is
disconnected is gone. So the subscription reconnects by itself with backoff and, when it
has an `engine`, re-reads the watched records from the database after each reconnect
(a flow execution: all its task executions; an organization: those updated since the
disconnect, less a safety margin) and yields them first, marked `catch_up=True`. Every
notification, live or caught up, passes one filter that keeps the highest `version` seen
per task execution, so repeats and stale messages never reach the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from flowworker.catch_up import LatestVersions, fetch_task_execution_notifications
from flowworker.notification import (
    DEFAULT_CHANNEL_PREFIX,
    InvalidNotification,
    Notification,
    flow_execution_channel,
    organization_channel,
)
from persistence.database import transaction

log = logging.getLogger(__name__)


def subscribe(
    redis_url: str,
    organization_id: uuid.UUID,
    flow_execution_id: uuid.UUID | None = None,
    **options: Any,
) -> Subscription:
    """A live, self-reconnecting subscription; see `Subscription` for the options."""
    return Subscription(redis_url, organization_id, flow_execution_id, **options)


class Subscription:
    """Notifications of one organization, or of one of its flow executions.

    engine: database to catch up from after a reconnect (None: no catch-up).
    catch_up_since: also yield, first, the watched records updated since then.
    catch_up_margin: how far before the disconnect an organization's catch-up reaches,
        covering clock skew between machines and transactions that commit late.
    """

    def __init__(
        self,
        redis_url: str,
        organization_id: uuid.UUID,
        flow_execution_id: uuid.UUID | None = None,
        *,
        engine: Engine | None = None,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        catch_up_since: dt.datetime | None = None,
        catch_up_margin: dt.timedelta = dt.timedelta(seconds=30),
        catch_up_limit: int = 100_000,
        reconnect_delay: float = 0.1,
        reconnect_delay_max: float = 5.0,
        remembered_records: int = 100_000,
    ) -> None:
        self.organization_id = organization_id
        self.flow_execution_id = flow_execution_id
        self.channel = (
            flow_execution_channel(channel_prefix, organization_id, flow_execution_id)
            if flow_execution_id
            else organization_channel(channel_prefix, organization_id)
        )
        self.reconnects = 0
        self._engine = engine
        self._catch_up_margin = catch_up_margin
        self._catch_up_limit = catch_up_limit
        self._reconnect_delay = reconnect_delay
        self._reconnect_delay_max = reconnect_delay_max
        self._client = redis.Redis.from_url(
            redis_url,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),  # reconnecting is ours to do, with catch-up
        )
        self._pubsub: PubSub | None = None
        self._ready: deque[Notification] = deque()
        self._latest = LatestVersions(remembered_records)
        self._delay = reconnect_delay
        self._retry_at = 0.0
        self._ever_connected = False
        self._last_healthy = dt.datetime.now(dt.UTC)
        self._catch_up_pending = catch_up_since is not None
        self._catch_up_from = catch_up_since
        self._catch_up_retry_at = 0.0
        self._connect()

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def receive(self, timeout: float | None = None) -> Notification | None:
        """The next new notification, or None when `timeout` seconds pass without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._ready:
                return self._ready.popleft()
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._pubsub is None:
                wait = self._retry_at - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, remaining))
                    continue
                self._connect()
                continue
            if self._catch_up_pending and time.monotonic() >= self._catch_up_retry_at:
                self._catch_up()
                continue
            notification = self._receive_live(min(remaining, 1.0))
            if notification is not None and self._latest.is_newer(notification):
                return notification

    def __iter__(self) -> Iterator[Notification]:
        while True:
            notification = self.receive()
            if notification is not None:
                yield notification

    def close(self) -> None:
        self._disconnect()
        self._client.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _receive_live(self, timeout: float) -> Notification | None:
        assert self._pubsub is not None
        try:
            message = self._pubsub.get_message(timeout=timeout)
        except (redis.RedisError, OSError) as exc:
            log.warning("lost the notification channel %s (%s); reconnecting", self.channel, exc)
            self._mark_missed_since(self._last_healthy)
            self._disconnect()
            self._retry_at = time.monotonic() + self._delay
            return None
        self._last_healthy = dt.datetime.now(dt.UTC)
        if message is None or message["type"] != "message":
            return None
        try:
            return Notification.from_json(message["data"])
        except InvalidNotification as exc:
            log.warning("ignoring a message on %s: %s", self.channel, exc)
            return None

    def _connect(self) -> None:
        """Subscribe, wait for Redis to confirm, then catch up; on failure schedule a retry."""
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            confirmation = pubsub.get_message(timeout=5)
            if confirmation is None or confirmation["type"] != "subscribe":
                raise redis.ConnectionError(f"no subscribe confirmation for {self.channel}")
        except (redis.RedisError, OSError) as exc:
            pubsub.close()
            log.debug("cannot subscribe to %s yet: %s", self.channel, exc)
            # Down from the start: what happens meanwhile is caught up once it is back.
            self._mark_missed_since(self._last_healthy)
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, self._reconnect_delay_max)
            return
        if self._ever_connected:
            self.reconnects += 1
            log.info("subscribed to %s again", self.channel)
        self._ever_connected = True
        self._pubsub = pubsub
        self._delay = self._reconnect_delay
        self._last_healthy = dt.datetime.now(dt.UTC)
        if self._catch_up_pending:
            self._catch_up()

    def _mark_missed_since(self, last_healthy: dt.datetime) -> None:
        """Remember to catch up; a flow execution is small enough to re-read whole."""
        since = None if self.flow_execution_id else last_healthy - self._catch_up_margin
        if not self._catch_up_pending:
            self._catch_up_pending, self._catch_up_from = True, since
        elif since is None or self._catch_up_from is None:
            self._catch_up_from = None
        else:
            self._catch_up_from = min(since, self._catch_up_from)

    def _disconnect(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None

    def _catch_up(self) -> None:
        """Queue the watched records changed while disconnected (subscribed first, so
        nothing committed from now on can fall between the two)."""
        self._catch_up_pending = False
        if self._engine is None:
            return
        since = self._catch_up_from
        try:
            with transaction(self._engine, self.organization_id) as connection:
                found = fetch_task_execution_notifications(
                    connection,
                    self.organization_id,
                    self.flow_execution_id,
                    since=since,
                    limit=self._catch_up_limit,
                )
        except SQLAlchemyError as exc:
            # Keep live notifications flowing meanwhile; retry, or a final status is lost.
            log.warning("cannot catch up %s from the database yet: %s", self.channel, exc)
            self._catch_up_pending = True
            self._catch_up_retry_at = time.monotonic() + self._reconnect_delay_max
            return
        if len(found) >= self._catch_up_limit:
            log.warning(
                "catch-up of %s stopped at %d records; reconcile with the query API",
                self.channel,
                self._catch_up_limit,
            )
        self._ready.extend(n for n in found if self._latest.is_newer(n))
