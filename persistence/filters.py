"""What to list and where to continue: the filter and the keyset cursor of the query layer.

A cursor is opaque to clients (base64 of version, order, `created_at` and `id` of the last
row of a page); a malformed one, or one made for the other order, is `InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from persistence.errors import InvalidCursor, InvalidQuery
from persistence.reports import parse_status
from persistence.status import ExecutionStatus


class Order(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


def parse_order(value: Order | str) -> Order:
    try:
        return Order(value)
    except ValueError:
        raise InvalidQuery(f"order must be 'newest' or 'oldest', not {value!r}") from None


@dataclass(frozen=True, slots=True)
class TaskExecutionFilter:
    """Which task executions to list. Every field narrows; the defaults list everything visible.

    Time ranges include their lower bound and exclude their upper one (`created_after <=
    created_at < created_before`). `statuses` is any of; asking for `deleted` shows deleted
    records even without `include_deleted`.
    """

    flow_execution_id: uuid.UUID | None = None
    task_name: str | None = None
    statuses: frozenset[ExecutionStatus] = field(default_factory=frozenset)
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    updated_after: dt.datetime | None = None
    updated_before: dt.datetime | None = None
    celery_task_id: str | None = None
    include_deleted: bool = False
    order: Order = Order.NEWEST

    def __post_init__(self) -> None:
        statuses: Iterable[Any] = self.statuses
        if isinstance(statuses, str):
            statuses = [statuses]
        object.__setattr__(self, "statuses", frozenset(parse_status(s) for s in statuses))
        object.__setattr__(self, "order", parse_order(self.order))
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, dt.datetime) or value.tzinfo is None):
                raise InvalidQuery(f"{name} must be a timezone-aware datetime, not {value!r}")
        for low, high in (("created_after", "created_before"), ("updated_after", "updated_before")):
            if None not in (getattr(self, low), getattr(self, high)) and (
                getattr(self, low) > getattr(self, high)
            ):
                raise InvalidQuery(f"{low} ({getattr(self, low)}) is after {high}")
        if self.task_name is not None and not self.task_name:
            raise InvalidQuery("task_name must not be empty")


# -- cursors -----------------------------------------------------------------------------

_CURSOR_VERSION = "1"


def encode_cursor(order: Order, created_at: dt.datetime, task_execution_id: uuid.UUID) -> str:
    """An opaque token for "the rows after this one, in this order"."""
    raw = "|".join((_CURSOR_VERSION, order.value, created_at.isoformat(), task_execution_id.hex))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Order, dt.datetime, uuid.UUID]:
    """(order, created_at, id) of a cursor from `encode_cursor`; `InvalidCursor` otherwise."""
    problem = f"malformed cursor {cursor!r}; pass back a next_cursor exactly as returned"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, order, created_at, task_execution_id = raw.split("|")
        decoded = (
            Order(order),
            dt.datetime.fromisoformat(created_at),
            uuid.UUID(task_execution_id),
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(problem) from None
    if version != _CURSOR_VERSION or decoded[1].tzinfo is None:
        raise InvalidCursor(problem)
    return decoded
