"""The worker side of flows: the advance task, and the listener that sends it.

`register(app)` makes every terminal report of a flow's task (recorded in this worker)
advance its flow execution. Celery calls `link` callbacks before the success signal is
handled, so the flow is driven from the recorder's terminal listener instead: it waits
(bounded) for the recorder to write the report, then advances in place. When it cannot (the
database is slow or away), it publishes the task `flowworker.flows.advance` (not recorded),
which retries until the report is visible, then advances.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from celery import signals as celery_signals

from flowworker.flows.dispatch import use_publisher_app
from flowworker.flows.runner import FlowRunner
from flowworker.pending import PendingReport
from flowworker.plugin import active_plugin
from persistence.database import transaction
from persistence.flows import fetch_record_status
from persistence.status import ExecutionStatus

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

ADVANCE_TASK = "flowworker.flows.advance"
#: how long the listener waits for the recorder to write the report before sending the
#: advance (the recorder writes in the background; the advance must see the report)
_FLUSH_TIMEOUT = 5.0
#: an advance whose triggering report is not in the database yet (the database was away)
#: waits this long between checks, this many times
_NOT_YET_VISIBLE_DELAY = 1.0
_NOT_YET_VISIBLE_RETRIES = 600

_listeners: dict[int, Any] = {}


def register(app: Celery) -> None:
    """Make `app`'s workers drive flows (idempotent)."""
    if ADVANCE_TASK not in app.tasks:
        _define_advance_task(app)
    listener = _listeners.setdefault(id(app), _make_listener(app))
    use_publisher_app(app)

    def attach(**_: Any) -> None:
        plugin = active_plugin()
        if plugin is not None:
            plugin.add_terminal_listener(listener)

    attach()
    # the plugin may be installed (or reinstalled) after this module is imported
    for signal in (celery_signals.worker_init, celery_signals.worker_process_init):
        signal.connect(attach, weak=False, dispatch_uid=f"flowworker.flows.attach.{id(app)}")


def _make_listener(app: Celery) -> Any:
    def advance_after(item: PendingReport) -> None:
        if item.ad_hoc is not None:
            return  # a plain Celery workflow: nothing to advance
        report = item.report
        plugin = active_plugin()
        # Advance right here, once the recorder has written the report: no extra message and
        # task per execution. When that cannot be done now (the database is slow or away),
        # an advance message does it later, retrying until the report is visible.
        if plugin is not None and plugin.recorder.flush(_FLUSH_TIMEOUT):
            try:
                _advance_if_visible(
                    app, report.flow_execution_id, report.task_name, report.task_execution_idx
                )
                return
            except Exception:
                log.warning(
                    "flowworker: advancing %s here failed; sending an advance message",
                    report.flow_execution_id,
                    exc_info=True,
                )
        app.send_task(
            ADVANCE_TASK,
            args=[str(report.flow_execution_id), report.task_name, report.task_execution_idx],
            add_to_parent=False,
        )

    return advance_after


class _NotVisibleYet(Exception):
    pass


def _advance_if_visible(
    app: Celery, flow_execution_id: uuid.UUID, task_name: str, task_execution_idx: int
) -> None:
    """Advance after the report of (task_name, idx); `_NotVisibleYet` while it is not in the
    database (then the advance could not see what it is about)."""
    plugin = active_plugin()
    if plugin is None:
        raise RuntimeError("flowworker is not installed in this worker; cannot advance flows")
    runner = FlowRunner(app, engine=plugin.recorder.engine, settings=plugin.settings)
    with transaction(runner.engine, runner.fetch_organization_id()) as connection:
        status = fetch_record_status(connection, flow_execution_id, task_name, task_execution_idx)
    if status is None or not status.is_terminal:
        raise _NotVisibleYet(f"{task_name}[{task_execution_idx}]")
    completed = task_name if status is ExecutionStatus.COMPLETED else None
    runner.advance(flow_execution_id, completed_task=completed)


def _define_advance_task(app: Celery) -> None:
    @app.task(
        name=ADVANCE_TASK,
        bind=True,
        flowworker_record=False,
        ignore_result=True,
        max_retries=_NOT_YET_VISIBLE_RETRIES,
    )
    def advance(self: Any, flow_execution_id: str, task_name: str, task_execution_idx: int) -> None:
        try:
            _advance_if_visible(
                self.app, uuid.UUID(flow_execution_id), task_name, task_execution_idx
            )
        except _NotVisibleYet:
            raise self.retry(countdown=_NOT_YET_VISIBLE_DELAY) from None


__all__ = ["ADVANCE_TASK", "register"]
