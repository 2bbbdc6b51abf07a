"""Publishing the task messages an advance decided on, under their flow identity.

The message carries the identity (flow execution, the flow's task name, the allocated idx)
in its headers, so the recorder keeps it: every report of the execution lands on the record
the engine created. The Celery `retries` of the message is the flow's retry number, which a
task sees as `self.request.retries`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flowworker.flows.engine import Dispatch

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

_publisher: Celery | None = None


def use_publisher_app(app: Celery) -> None:
    """The Celery app this process publishes flow tasks with when none is given (the HTTP
    API's re-execution); `flowworker.flows.worker.register` sets it."""
    global _publisher
    _publisher = app


def publisher_app() -> Celery:
    """The app set by `use_publisher_app`, else one configured by our `celeryconfig`
    (broker from ``CELERY_BROKER_URL``); flow tasks are published by name, so it needs no
    task registered."""
    global _publisher
    if _publisher is None:
        from celery import Celery

        app = Celery("flowworker-flows")
        try:
            app.config_from_object("celeryconfig")
            _ = app.conf.broker_url  # the configuration loads lazily: load it now
        except ImportError:
            app = Celery("flowworker-flows", broker=os.environ.get("CELERY_BROKER_URL"))
        _publisher = app
    return _publisher


def publish_dispatches(
    app: Celery, dispatches: Sequence[Dispatch], *, queue: str | None = None
) -> list[tuple[Dispatch, BaseException]]:
    """Publish each dispatch; returns those that could not be published, with the error."""
    failures: list[tuple[Dispatch, BaseException]] = []
    for dispatch in dispatches:
        headers: dict[str, Any] = {}
        dispatch.identity.write_to(headers)
        options: dict[str, Any] = {"queue": queue} if queue else {}
        try:
            app.send_task(
                dispatch.celery_task,
                kwargs=dispatch.kwargs,
                task_id=dispatch.celery_task_id,
                countdown=dispatch.countdown or None,
                retries=dispatch.identity.retries,
                headers=headers,
                add_to_parent=False,
                **options,
            )
        except Exception as exc:  # the broker is down: the caller records the failure
            log.warning("flowworker: could not publish %s: %s", dispatch.celery_task, exc)
            failures.append((dispatch, exc))
    return failures


__all__ = ["publish_dispatches", "publisher_app", "use_publisher_app"]
