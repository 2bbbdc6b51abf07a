"""The tasks app as the flow tests' worker subprocesses (and the test process) run it:
our built-in tasks and the flow engine, on the broker and queue the fixtures choose
(FW_TEST_BROKER_URL, FW_TEST_QUEUE; the database comes from FLOWWORKER_DATABASE_URL)."""

from __future__ import annotations

import os

from tasks.app import app

app.conf.update(
    broker_url=os.environ.get("FW_TEST_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_default_queue=os.environ.get("FW_TEST_QUEUE", "flowworker-flow-tests"),
    worker_hijack_root_logger=False,
)

__all__ = ["app"]
