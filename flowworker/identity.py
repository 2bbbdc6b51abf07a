"""Giving each task execution its (flow_execution_id, task_name, task_execution_idx).

Decided once, when the message is published, and carried in its headers; see
`flowworker.headers`. Costs no database round trip for a task that opens its own workflow
(idx 0 of a flow execution named after the task itself: nobody else can hold that key), and
one atomic counter round trip otherwise (children, group members, retries).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from celery import current_task

from flowworker.headers import ExecutionIdentity, as_uuid, flow_execution_id_for
from persistence.database import transaction
from persistence.hierarchy import AdHocFlowExecution, fetch_execution_key

if TYPE_CHECKING:
    from flowworker.plugin import Plugin

log = logging.getLogger(__name__)


def assign_at_publish(plugin: Plugin, headers: dict[str, Any]) -> ExecutionIdentity | None:
    """Fix the identity of the message being published into its `headers`."""
    retries = int(headers.get("retries") or 0)
    existing = ExecutionIdentity.read_from(headers)
    if existing is not None:
        if existing.retries == retries:
            return existing  # fixed by a flow run, or published again unchanged
        # Task.retry re-publishes the same headers with retries + 1: a new execution.
        idx = plugin.recorder.allocate_idx(
            existing.flow_execution_id,
            existing.task_name,
            existing.organization_id,
            ad_hoc=ad_hoc_flow_execution(existing, headers.get("root_id")),
            at_least=existing.task_execution_idx + 1,
        )
        assigned = dataclasses.replace(existing, task_execution_idx=idx, retries=retries)
    else:
        assigned = _new_identity(plugin, headers, retries)
    assigned = dataclasses.replace(assigned, published_at=time.time())
    assigned.write_to(headers)
    return assigned


def _new_identity(
    plugin: Plugin, headers: dict[str, Any], retries: int, queue_behind_stuck: bool = False
) -> ExecutionIdentity:
    task_id = str(headers["id"])
    task_name = str(headers["task"])
    parent = _running_identity(task_id, headers.get("parent_id"))
    opener: str | None = None
    if parent is not None:
        # published by a recorded task: same flow execution (a chain step, a child, a group)
        flow_execution_id, opens = parent.flow_execution_id, False
        organization_id, ad_hoc, opener = parent.organization_id, parent.ad_hoc, parent.opener
    else:
        flow_execution_id, opens = flow_execution_id_for(
            task_id, headers.get("root_id"), headers.get("group")
        )
        organization_id, ad_hoc = plugin.recorder.default_organization_id(), True
    if opens:
        # A workflow named after this very task: its first attempt holds idx 0 without the
        # counter (nobody else can), so a retry of it must start at 1.
        opener = task_name
        if retries == 0:
            return ExecutionIdentity(
                flow_execution_id, task_name, 0, organization_id, retries, ad_hoc, opener=opener
            )
    draft = ExecutionIdentity(
        flow_execution_id, task_name, 0, organization_id, retries, ad_hoc, opener=opener
    )
    idx = plugin.recorder.allocate_idx(
        flow_execution_id,
        task_name,
        organization_id,
        ad_hoc=ad_hoc_flow_execution(draft, headers.get("root_id")),
        at_least=1 if opener == task_name else 0,
        queue_behind_stuck=queue_behind_stuck,
    )
    return dataclasses.replace(draft, task_execution_idx=idx)


def _running_identity(publishing_task_id: str, parent_id: Any) -> ExecutionIdentity | None:
    # Celery names the running task as the parent of what it publishes: without one there
    # is no task to look up (and the task stack lookup is the costliest step of a publish)
    if not parent_id:
        return None
    task = current_task
    if task is None:
        return None
    request = getattr(task, "request", None)
    if request is None or getattr(request, "id", None) in (None, publishing_task_id):
        return None
    return ExecutionIdentity.read_from(request)


def identity_of(plugin: Plugin, request: Any, celery_task_name: str) -> ExecutionIdentity | None:
    """The identity of the execution `request` describes (worker side).

    A message published without the plugin carries none: then it is resolved here, once
    (found again by Celery task id and attempt, so a redelivery lands on the same record),
    and kept on the request for the later signals of the same execution.
    """
    cached = getattr(request, "_flowworker_identity", None)
    if isinstance(cached, ExecutionIdentity):
        return cached  # the task_prerun of this execution read or resolved it already
    found = ExecutionIdentity.read_from(request)
    retries = int(getattr(request, "retries", 0) or 0)
    if found is not None and found.retries == retries:
        with contextlib.suppress(AttributeError):  # a read-only request object
            request._flowworker_identity = found
        return found
    task_id = getattr(request, "id", None)
    if not task_id:
        return found
    # No identity, or the previous attempt's: a retry whose publish got no idx (database away)
    organization_id = (
        plugin.recorder.default_organization_id() if found is None else found.organization_id
    )

    def fetch_key() -> tuple[uuid.UUID, str, int] | None:
        with transaction(plugin.recorder.engine, organization_id) as connection:
            return fetch_execution_key(connection, str(task_id), retries)

    # bounded like an allocation: a frozen database must not hold the task
    key = plugin.recorder.run_on_database(fetch_key, queue_behind_stuck=True)
    if found is not None:
        if key is not None:
            idx = key[2]
        else:
            idx = plugin.recorder.allocate_idx(
                found.flow_execution_id,
                found.task_name,
                found.organization_id,
                ad_hoc=ad_hoc_flow_execution(found, getattr(request, "root_id", None)),
                at_least=found.task_execution_idx + 1,
                queue_behind_stuck=True,
            )
        resolved = dataclasses.replace(
            found, task_execution_idx=idx, retries=retries, published_at=None
        )
    elif key is not None:
        flow_execution_id, task_name, idx = key
        resolved = ExecutionIdentity(
            flow_execution_id, task_name, idx, organization_id, retries, ad_hoc=True
        )
    else:
        headers = {
            "id": task_id,
            "task": celery_task_name,
            "root_id": getattr(request, "root_id", None),
            "group": getattr(request, "group", None),
        }
        resolved = _new_identity(plugin, headers, retries, queue_behind_stuck=True)
    with contextlib.suppress(AttributeError):  # a read-only request object
        request._flowworker_identity = resolved
    return resolved


def ad_hoc_flow_execution(
    assigned: ExecutionIdentity, root_id: str | None
) -> AdHocFlowExecution | None:
    if not assigned.ad_hoc:
        return None
    return AdHocFlowExecution(assigned.flow_execution_id, assigned.organization_id, root_id)


__all__ = ["as_uuid", "assign_at_publish", "identity_of"]
