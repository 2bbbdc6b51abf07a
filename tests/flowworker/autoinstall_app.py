"""A user's Celery app that only loads our celeryconfig: no flowworker code at all."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("autoinstall_example")
app.config_from_object("celeryconfig")
app.conf.update(
    broker_url=os.environ["FW_TEST_BROKER_URL"],
    task_default_queue=os.environ["FW_TEST_QUEUE"],
    worker_hijack_root_logger=False,
)


@app.task(name="example.multiply")
def multiply(x: int, y: int) -> int:
    return x * y
