"""The notification wire format, shared by the publisher (`flowworker.notify`), the subscriber
(`flowworker.subscribe`) and anything else that relays notifications (the HTTP WebSocket).

Channels (Redis pub/sub), every message published on both:

    {prefix}:org:{organization_id}
    {prefix}:org:{organization_id}:flow-execution:{flow_execution_id}

The payload is one JSON object per accepted status change; see `Notification`. The record's
`version` grows by one with every accepted change, so a client keeps the highest version
per `id` and drops older or repeated messages.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from persistence.errors import FlowworkerError
from persistence.reports import UpsertResult
from persistence.status import ExecutionStatus

DEFAULT_CHANNEL_PREFIX = "flowworker"

#: The `type` of every task execution status message; other kinds may follow.
TASK_EXECUTION_TYPE = "task_execution"


class InvalidNotification(FlowworkerError):
    """A message on a flowworker channel that is not a notification this version reads."""


def organization_channel(prefix: str, organization_id: uuid.UUID | str) -> str:
    return f"{prefix}:org:{organization_id}"


def flow_execution_channel(
    prefix: str, organization_id: uuid.UUID | str, flow_execution_id: uuid.UUID | str
) -> str:
    return f"{organization_channel(prefix, organization_id)}:flow-execution:{flow_execution_id}"


@dataclass(frozen=True, slots=True)
class Notification:
    """One status of one task execution, as published or as re-read from the database.

    `sent_at` is when the publisher sent it (None for catch-up); `catch_up` is True when
    the subscriber read it from the database after a reconnect rather than from Redis.
    """

    id: uuid.UUID
    organization_id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int
    status: ExecutionStatus
    attempt: int
    version: int
    updated_at: dt.datetime
    celery_task_id: str | None = None
    sent_at: dt.datetime | None = None
    catch_up: bool = False

    @classmethod
    def from_result(cls, result: UpsertResult) -> Notification:
        report = result.report
        return cls(
            id=result.task_execution_id,
            organization_id=result.organization_id,
            flow_execution_id=report.flow_execution_id,
            task_name=report.task_name,
            task_execution_idx=report.task_execution_idx,
            status=result.status,
            attempt=result.attempt,
            version=result.version,
            updated_at=result.updated_at,
            celery_task_id=report.celery_task_id,
        )

    def stamped(self, sent_at: dt.datetime) -> Notification:
        return replace(self, sent_at=sent_at)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object on the wire (plus `catch_up` only when it is True)."""
        payload: dict[str, Any] = {
            "type": TASK_EXECUTION_TYPE,
            "id": str(self.id),
            "organization_id": str(self.organization_id),
            "flow_execution_id": str(self.flow_execution_id),
            "task_name": self.task_name,
            "task_execution_idx": self.task_execution_idx,
            "status": self.status.value,
            "attempt": self.attempt,
            "version": self.version,
            "updated_at": self.updated_at.isoformat(),
            "celery_task_id": self.celery_task_id,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
        }
        if self.catch_up:
            payload["catch_up"] = True
        return payload

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> Notification:
        try:
            payload = json.loads(data)
            if payload.get("type") != TASK_EXECUTION_TYPE:
                raise ValueError(f"type is {payload.get('type')!r}, not {TASK_EXECUTION_TYPE!r}")
            sent_at = payload.get("sent_at")
            return cls(
                id=uuid.UUID(payload["id"]),
                organization_id=uuid.UUID(payload["organization_id"]),
                flow_execution_id=uuid.UUID(payload["flow_execution_id"]),
                task_name=str(payload["task_name"]),
                task_execution_idx=int(payload["task_execution_idx"]),
                status=ExecutionStatus(payload["status"]),
                attempt=int(payload["attempt"]),
                version=int(payload["version"]),
                updated_at=dt.datetime.fromisoformat(payload["updated_at"]),
                celery_task_id=payload.get("celery_task_id"),
                sent_at=dt.datetime.fromisoformat(sent_at) if sent_at else None,
                catch_up=bool(payload.get("catch_up", False)),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidNotification(
                f"not a flowworker task execution notification ({exc}): {data[:200]!r}"
            ) from exc


def encode_result(result: UpsertResult, sent_at: str) -> bytes:
    """The payload of `Notification.from_result(result)` sent at `sent_at` (ISO 8601),
    built directly: this runs for every published change, in the publisher's thread."""
    report = result.report
    return json.dumps(
        {
            "type": TASK_EXECUTION_TYPE,
            "id": str(result.task_execution_id),
            "organization_id": str(result.organization_id),
            "flow_execution_id": str(report.flow_execution_id),
            "task_name": report.task_name,
            "task_execution_idx": report.task_execution_idx,
            "status": result.status.value,
            "attempt": result.attempt,
            "version": result.version,
            "updated_at": result.updated_at.isoformat(),
            "celery_task_id": report.celery_task_id,
            "sent_at": sent_at,
        },
        separators=(",", ":"),
    ).encode()
