"""Tasks that take time or fail on purpose: for demos, tests and rehearsing retries."""

from __future__ import annotations

import time
from typing import Any

from tasks.app import app


@app.task(name="tasks.sleep")
def sleep(seconds: float, value: Any = None) -> Any:
    """Sleeps, then returns `value` (so it can sit in the middle of a flow)."""
    time.sleep(seconds)
    return value


@app.task(name="tasks.fail_times", bind=True)
def fail_times(self: Any, failures: int, value: Any = None) -> Any:
    """Fails its first `failures` attempts, then returns `value`.

    The attempt number is Celery's `retries`: a flow's retry policy sets it on each retry."""
    attempt = int(self.request.retries or 0)
    if attempt < failures:
        raise RuntimeError(f"attempt {attempt} fails on purpose ({failures} failure(s) asked)")
    return value
