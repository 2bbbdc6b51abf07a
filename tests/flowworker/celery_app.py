"""The Celery app the recording tests run in real worker processes.

Configured from the environment the test fixtures set: FW_TEST_BROKER_URL,
FW_TEST_RESULT_BACKEND, FW_TEST_QUEUE, FLOWWORKER_DATABASE_URL, FLOWWORKER_SPOOL_DIR.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, group

import flowworker

app = Celery("flowworker_tests")
app.conf.update(
    broker_url=os.environ.get("FW_TEST_BROKER_URL", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("FW_TEST_RESULT_BACKEND") or None,
    task_default_queue=os.environ.get("FW_TEST_QUEUE", "flowworker-tests"),
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
flowworker.install(app)


@app.task(name="tests.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tests.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(
    name="tests.flaky",
    bind=True,
    autoretry_for=(RuntimeError,),
    max_retries=2,
    default_retry_delay=0,
    retry_backoff=False,
)
def flaky(self: Any, failures: int) -> str:
    """Fails its first `failures` attempts, then succeeds."""
    if self.request.retries < failures:
        raise RuntimeError(f"attempt {self.request.retries} fails on purpose")
    return f"succeeded on attempt {self.request.retries}"


@app.task(name="tests.wait_for_file")
def wait_for_file(path: str, timeout: float = 60.0) -> str:
    """Runs until `path` exists (lets a test act while the task is running)."""
    deadline = time.monotonic() + timeout
    Path(path + ".started").write_text(str(os.getpid()))
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.05)
    return "released"


@app.task(name="tests.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="tests.fan_out")
def fan_out(count: int) -> int:
    """Publishes `count` children from inside a task: they join this task's workflow."""
    group(add.s(n, n) for n in range(count)).apply_async()
    return count


@app.task(name="tests.secret", flowworker_record=True)
def secret(user: str, password: str, options: dict[str, Any]) -> str:
    return user


@app.task(name="tests.untracked", flowworker_record=False)
def untracked() -> str:
    return "not recorded"


@app.task(name="tests.acks_late_sleep", acks_late=True, reject_on_worker_lost=True)
def acks_late_sleep(path: str) -> str:
    """Waits for `path` on the first delivery only; a redelivery finishes at once."""
    marker = Path(path + ".started")
    if marker.exists():
        return "finished on redelivery"
    marker.write_text(str(os.getpid()))
    time.sleep(60)
    return "finished"


@app.task(name="tests.fan_out_then_mark")
def fan_out_then_mark(count: int, path: str) -> int:
    """Publishes `count` children, then leaves a mark (visible without any database)."""
    group(add.s(n, n) for n in range(count)).apply_async()
    Path(path).write_text("done")
    return count
