"""`flowworker.install(app)`: the one line that makes a Celery app record every task."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Any

from celery import signals as celery_signals

from flowworker import signals, writer_process
from flowworker.config import Settings
from flowworker.control import register_operations
from flowworker.plugin import Plugin, activate, active_plugin

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

_connect_lock = threading.Lock()
_connected = False


def install(app: Celery | None = None, **overrides: Any) -> Plugin:
    """Record every task of `app` (publishing side and worker side).

    Settings come from `overrides`, then the app's config (`flowworker_database_url`, ...),
    then the environment (`FLOWWORKER_DATABASE_URL`, ...); see `flowworker.config`.
    Calling it again replaces the previous settings.
    """
    settings = Settings.load(app.conf if app is not None else None, **overrides)
    previous = active_plugin()
    if previous is not None:
        previous.running.close()
        previous.recorder.close()
    plugin = Plugin(app, settings)
    activate(plugin)
    _connect_signals()
    register_operations()  # the flowworker_stats command and the reap task
    return plugin


def uninstall() -> None:
    """Stop recording in this process (flushes what was handed over)."""
    plugin = active_plugin()
    activate(None)
    if plugin is not None:
        plugin.running.close()
        plugin.recorder.close()


_HANDLERS = (
    (celery_signals.before_task_publish, signals.record_task_published),
    (celery_signals.task_prerun, signals.record_task_started),
    (celery_signals.task_success, signals.record_task_succeeded),
    (celery_signals.task_failure, signals.record_task_failed),
    (celery_signals.task_retry, signals.record_task_retried),
    (celery_signals.task_revoked, signals.record_task_revoked),
)


def _connect_signals() -> None:
    global _connected
    with _connect_lock:
        if _connected:
            return
        for signal, handler in _HANDLERS:
            signal.connect(handler, weak=False, dispatch_uid=f"flowworker.{handler.__name__}")
        celery_signals.worker_process_shutdown.connect(
            _close_recorder, weak=False, dispatch_uid="flowworker.close.child"
        )
        celery_signals.worker_shutdown.connect(
            _close_recorder, weak=False, dispatch_uid="flowworker.close.main"
        )
        celery_signals.worker_init.connect(
            writer_process.start_for_worker, weak=False, dispatch_uid="flowworker.writer.start"
        )
        celery_signals.worker_shutdown.connect(
            _stop_writer_process, weak=False, dispatch_uid="flowworker.writer.stop"
        )
        atexit.register(_stop_writer_process)
        atexit.register(_close_recorder)  # runs first
        _connected = True


def _close_recorder(**_: Any) -> None:
    plugin = active_plugin()
    if plugin is not None:
        try:
            plugin.recorder.close()
        except Exception:
            log.exception("flowworker: flushing the recorder at shutdown failed")


def _stop_writer_process(**_: Any) -> None:
    if writer_process.writing_for_worker():
        _close_recorder()  # this process lets go of its journal first
        writer_process.stop_for_worker()
