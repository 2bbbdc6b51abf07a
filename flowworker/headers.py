"""The execution identity a task message carries in its headers.

Fixed when the message is published, so every later report (running, completed, failed,
cancelled) and a redelivery of the same message land on the same record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

FLOW_EXECUTION_ID = "flowworker_flow_execution_id"
TASK_NAME = "flowworker_task_name"
TASK_EXECUTION_IDX = "flowworker_task_execution_idx"
ORGANIZATION_ID = "flowworker_organization_id"
#: Celery's `retries` at the moment the identity was fixed: a retry re-publishes the same
#: headers with `retries` + 1, which is how a retry is told apart from a redelivery.
RETRIES = "flowworker_retries"
#: set when the flow execution is an ad-hoc Celery workflow that flowworker creates itself
AD_HOC = "flowworker_ad_hoc"
#: when the message was published (epoch seconds): the record's queued_at, whoever writes it
PUBLISHED_AT = "flowworker_published_at"
#: the task name that took idx 0 of this flow execution without the counter (it opened the
#: workflow); later allocations for that name start at 1
OPENER = "flowworker_opener"


@dataclass(frozen=True, slots=True)
class ExecutionIdentity:
    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int
    organization_id: uuid.UUID
    retries: int = 0
    ad_hoc: bool = False
    published_at: float | None = None
    opener: str | None = None

    def write_to(self, headers: MutableMapping[str, Any]) -> None:
        headers[FLOW_EXECUTION_ID] = str(self.flow_execution_id)
        headers[TASK_NAME] = self.task_name
        headers[TASK_EXECUTION_IDX] = self.task_execution_idx
        headers[ORGANIZATION_ID] = str(self.organization_id)
        headers[RETRIES] = self.retries
        headers[AD_HOC] = self.ad_hoc
        headers[PUBLISHED_AT] = self.published_at
        headers[OPENER] = self.opener

    @classmethod
    def read_from(cls, source: Mapping[str, Any] | Any) -> ExecutionIdentity | None:
        """The identity in a headers dict or a Celery request context; None when absent or
        unreadable (a message published without the plugin)."""
        get = _getter(source)
        try:
            flow_execution_id = get(FLOW_EXECUTION_ID)
            if flow_execution_id is None:
                return None
            return cls(
                flow_execution_id=uuid.UUID(str(flow_execution_id)),
                task_name=str(get(TASK_NAME)),
                task_execution_idx=int(get(TASK_EXECUTION_IDX)),
                organization_id=uuid.UUID(str(get(ORGANIZATION_ID))),
                retries=int(get(RETRIES) or 0),
                ad_hoc=bool(get(AD_HOC)),
                published_at=float(get(PUBLISHED_AT) or 0) or None,
                opener=get(OPENER) or None,
            )
        except (TypeError, ValueError):
            return None


def published_identity(request: Any) -> tuple[str, str, int, str, bool, float | None] | None:
    """The identity a Celery request context carries, as published: flow execution id,
    task name, idx, organization id (checked, as text), whether ad hoc, when published; None
    when it carries none, or the previous attempt's (`ExecutionIdentity.read_from`, and
    `flowworker.identity.identity_of` to resolve it)."""
    attributes = getattr(request, "__dict__", None)
    if not attributes:
        return None
    get = attributes.get
    if get(FLOW_EXECUTION_ID) is None:  # custom headers are not attributes everywhere
        nested = get("headers")
        if not isinstance(nested, Mapping):
            return None
        get = nested.get
    flow_execution_id, organization_id = get(FLOW_EXECUTION_ID), get(ORGANIZATION_ID)
    idx, published_at = get(TASK_EXECUTION_IDX), get(PUBLISHED_AT)
    if (
        type(flow_execution_id) is not str
        or type(organization_id) is not str
        or type(idx) is not int
        or (get(RETRIES) or 0) != (attributes.get("retries") or 0)
    ):
        return None
    try:
        uuid.UUID(flow_execution_id)
        uuid.UUID(organization_id)
        published = float(published_at) if published_at else None
    except (TypeError, ValueError):
        return None
    return (
        flow_execution_id,
        str(get(TASK_NAME)),
        idx,
        organization_id,
        bool(get(AD_HOC)),
        published,
    )


def _getter(source: Mapping[str, Any] | Any) -> Any:
    if isinstance(source, Mapping):
        return source.get
    # A Celery request Context: custom headers appear as attributes and, with some
    # brokers/protocols, only in `.headers`.
    attributes = getattr(source, "__dict__", None)
    if attributes is not None and attributes.get(FLOW_EXECUTION_ID) is not None:
        return attributes.get  # the common case, without a getattr per name
    nested = getattr(source, "headers", None) or {}

    def get(name: str) -> Any:
        value = getattr(source, name, None)
        return nested.get(name) if value is None else value

    return get


def flow_execution_id_for(
    task_id: str, root_id: str | None, group_id: str | None
) -> tuple[uuid.UUID, bool]:
    """The ad-hoc flow execution a plain Celery task belongs to, and whether the task opens it.

    A Celery workflow is identified by its root id. A group called directly gives every member
    its own root id (its own task id) and a shared group id: then the group is the workflow.
    """
    if group_id and (not root_id or root_id == task_id):
        return as_uuid(group_id), False
    if root_id and root_id != task_id:
        return as_uuid(root_id), False
    return as_uuid(task_id), True


_NAMESPACE = uuid.UUID("6f1c1f55-3c0e-4a59-9a53-1b0c1d0f6d2a")


def as_uuid(value: str) -> uuid.UUID:
    """Celery ids are UUIDs unless a caller chose its own; map those stably onto UUIDs."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.uuid5(_NAMESPACE, value)
