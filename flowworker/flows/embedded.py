"""A Celery worker inside this process, in a background thread: the demo's "no servers" worker.

Celery's `worker_main` installs signal handlers and so wants the main thread; a bare
`WorkController` does not, and runs in any thread. The threads pool lets independent tasks
of a flow run at the same time. With the `memory://` transport the broker lives in this
process too, so nothing needs to be installed or started.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from celery.worker import WorkController
from celery.worker import state as worker_state

if TYPE_CHECKING:
    from celery import Celery

#: how often the in-memory broker is polled (kombu's default is a whole second)
MEMORY_POLLING_INTERVAL = 0.02


def use_memory_broker(app: Celery) -> None:
    """Point `app` at an in-process broker (only this process can reach it)."""
    app.conf.update(
        broker_url="memory://",
        broker_transport_options={"polling_interval": MEMORY_POLLING_INTERVAL},
        result_backend=None,
        worker_hijack_root_logger=False,
    )


class _Controller(WorkController):
    started: threading.Event

    def on_consumer_ready(self, consumer: Any) -> None:
        self.started.set()


class EmbeddedWorker:
    """`with EmbeddedWorker(app): ...` runs a threads-pool worker for the block's duration."""

    def __init__(self, app: Celery, *, concurrency: int = 4, start_timeout: float = 30.0) -> None:
        self.app = app
        self.concurrency = concurrency
        self.start_timeout = start_timeout
        self.hostname = f"embedded-{os.getpid()}@{os.uname().nodename}"
        self._thread: threading.Thread | None = None
        self._controller: _Controller | None = None

    def start(self) -> None:
        self.app.finalize()
        self.app.set_current()
        self.app.set_default()  # pool threads look the app up as the default one
        controller = _Controller(
            app=self.app,
            hostname=self.hostname,
            concurrency=self.concurrency,
            pool="threads",
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        controller.started = threading.Event()
        self._controller = controller
        self._thread = threading.Thread(
            target=controller.start, name="flowworker-embedded-worker", daemon=True
        )
        self._thread.start()
        if not controller.started.wait(self.start_timeout):
            raise RuntimeError(f"the embedded worker did not start within {self.start_timeout}s")

    def stop(self, timeout: float = 15.0) -> None:
        if self._thread is None:
            return
        worker_state.should_terminate = 0  # the consumer loop's own "stop now"
        if self._controller is not None:
            self._controller.stop(in_sighandler=False)  # waits for the running tasks
        self._thread.join(timeout)
        worker_state.should_terminate = None
        self._thread = self._controller = None

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["EmbeddedWorker", "use_memory_broker"]
