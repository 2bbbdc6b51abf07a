"""The worker side of flows: the advance task, and the listener that sends it.

`register(app)` adds the task `flowworker.flows.advance` to a Celery app and makes every
terminal report of a flow's task (recorded in this worker) publish one advance message for
its flow execution. Celery calls `link` callbacks before the success signal is handled, so
the flow is driven from the recorder's terminal listener instead: by then the report is
handed to the recorder; the listener waits (bounded) for it to be written, so the advance
sees it, and an advance that still does not see it retries until it does.
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
    def publish_advance(item: PendingReport) -> None:
        if item.ad_hoc is not None:
            return  # a plain Celery workflow: nothing to advance
        plugin = active_plugin()
        if plugin is not None:
            plugin.recorder.flush(_FLUSH_TIMEOUT)  # a False here is what the retry is for
        report = item.report
        app.send_task(
            ADVANCE_TASK,
            args=[
                str(report.flow_execution_id),
                report.task_name,
                report.task_execution_idx,
            ],
            add_to_parent=False,
        )

    return publish_advance


def _define_advance_task(app: Celery) -> None:
    @app.task(
        name=ADVANCE_TASK,
        bind=True,
        flowworker_record=False,
        ignore_result=True,
        max_retries=_NOT_YET_VISIBLE_RETRIES,
    )
    def advance(self: Any, flow_execution_id: str, task_name: str, task_execution_idx: int) -> None:
        plugin = active_plugin()
        if plugin is None:
            log.error("flowworker is not installed in this worker; cannot advance flows")
            return
        runner = FlowRunner(self.app, engine=plugin.recorder.engine, settings=plugin.settings)
        key = uuid.UUID(flow_execution_id)
        with transaction(runner.engine, runner.fetch_organization_id()) as connection:
            status = fetch_record_status(connection, key, task_name, task_execution_idx)
        if status is None or not status.is_terminal:
            raise self.retry(countdown=_NOT_YET_VISIBLE_DELAY)
        runner.advance(key)


__all__ = ["ADVANCE_TASK", "register"]
