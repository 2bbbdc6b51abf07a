"""Reconciling with the database: what a subscriber re-reads after a reconnect (through
the query layer, `persistence.queries`), and the filter that lets each task execution's
newest state through exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict

from sqlalchemy import Connection

from flowworker.notification import Notification
from persistence.filters import Order, TaskExecutionFilter
from persistence.queries import MAX_LIMIT, fetch_task_executions
from persistence.records import TaskExecutionRecord


def fetch_task_execution_notifications(
    connection: Connection,
    organization_id: uuid.UUID,
    flow_execution_id: uuid.UUID | None = None,
    *,
    since: dt.datetime | None = None,
    limit: int = 100_000,
) -> list[Notification]:
    """The current state of the watched records (a flow execution's, or the organization's
    updated since `since`) as catch-up notifications, at most `limit` of them."""
    query = TaskExecutionFilter(
        flow_execution_id=flow_execution_id,
        updated_after=since,
        include_deleted=True,  # a deletion is a change the watcher has not seen either
        order=Order.OLDEST,
    )
    found: list[Notification] = []
    cursor: str | None = None
    while len(found) < limit:
        page = fetch_task_executions(
            connection, organization_id, query, min(MAX_LIMIT, limit - len(found)), cursor
        )
        found.extend(notification_of(record) for record in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


def notification_of(record: TaskExecutionRecord) -> Notification:
    return Notification(
        id=record.id,
        organization_id=record.organization_id,
        flow_execution_id=record.flow_execution_id,
        task_name=record.task_name,
        task_execution_idx=record.task_execution_idx,
        status=record.status,
        attempt=record.attempt,
        version=record.version,
        updated_at=record.updated_at,
        celery_task_id=record.celery_task_id,
        catch_up=True,
    )


class LatestVersions:
    """The highest version seen per task execution id, forgetting the least recent ids
    beyond `capacity` so a long-lived subscription stays bounded."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._versions: OrderedDict[uuid.UUID, int] = OrderedDict()

    def is_newer(self, notification: Notification) -> bool:
        seen = self._versions.get(notification.id)
        if seen is not None and seen >= notification.version:
            return False
        self._versions[notification.id] = notification.version
        self._versions.move_to_end(notification.id)
        if len(self._versions) > self._capacity:
            self._versions.popitem(last=False)
        return True
