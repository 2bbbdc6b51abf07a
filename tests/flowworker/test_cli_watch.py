"""`flowworker watch` as a real process: lines appear as statuses change, Ctrl-C exits 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import pytest
from sqlalchemy import Engine

from flowworker.notify import StatusNotifier
from persistence.status import ExecutionStatus
from tests.flowworker.notify_support import record, reports_for, shared_redis_url, unique_prefix
from tests.persistence.helpers import make_flow_execution

pytestmark = pytest.mark.redis

QUEUED, RUNNING, COMPLETED = (
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.COMPLETED,
)
FLOWWORKER = [sys.executable, "-c", "from flowworker.cli import main; main()"]


class Watch:
    """A running `flowworker watch`, its output read line by line without blocking the test."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        for stream, lines in ((process.stdout, self.stdout), (process.stderr, self.stderr)):
            threading.Thread(target=_pump, args=(stream, lines), daemon=True).start()

    def next_line(self, lines: queue.Queue[str] | None = None, timeout: float = 60) -> str:
        try:
            return (lines or self.stdout).get(timeout=timeout).rstrip("\n")
        except queue.Empty:
            pytest.fail(f"flowworker watch printed nothing for {timeout} s")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def environment(engine: Engine, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWORKER_")}
    env.update(
        FLOWWORKER_DATABASE_URL=engine.url.render_as_string(hide_password=False),
        FLOWWORKER_REDIS_URL=shared_redis_url(),
        FLOWWORKER_CHANNEL_PREFIX=prefix,
        FLOWWORKER_ORGANIZATION="acme",
        **extra,
    )
    return env


@contextmanager
def running_watch(env: dict[str, str], *args: str) -> Iterator[Watch]:
    process = subprocess.Popen(
        [*FLOWWORKER, "watch", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Watch(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_json_lines_show_the_current_state_then_each_change(pg_engine: Engine) -> None:
    prefix = unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(pg_engine, "acme")
    [queued] = record(pg_engine, reports_for(flow_execution_id, QUEUED, 1, "extract"))
    notifier = StatusNotifier(shared_redis_url(), prefix)
    env = environment(pg_engine, prefix)
    with running_watch(env, "--flow-execution", str(flow_execution_id), "--json") as watch:
        assert "watching flow execution" in watch.next_line(watch.stderr)
        first = json.loads(watch.next_line())
        for status in (RUNNING, COMPLETED):
            notifier.publish_changes(
                record(pg_engine, reports_for(flow_execution_id, status, 1, "extract"))
            )
        changes = [json.loads(watch.next_line()) for _ in range(2)]
        assert watch.interrupt() == 0
        assert watch.stderr.empty()
    notifier.close()
    assert first["id"] == str(queued.task_execution_id)
    assert (first["status"], first["version"], first["catch_up"]) == ("queued", 1, True)
    assert [(c["status"], c["version"], c["catch_up"]) for c in changes] == [
        ("running", 2, False),
        ("completed", 3, False),
    ]
    assert {c["organization_id"] for c in changes} == {str(organization_id)}
    assert {c["task_name"] for c in changes} == {"extract"}


def test_people_get_one_line_per_change(pg_engine: Engine) -> None:
    prefix = unique_prefix()
    _, flow_execution_id = make_flow_execution(pg_engine, "acme")
    notifier = StatusNotifier(shared_redis_url(), prefix)
    with running_watch(environment(pg_engine, prefix)) as watch:
        assert "watching organization 'acme'" in watch.next_line(watch.stderr)
        for status in (QUEUED, RUNNING):
            notifier.publish_changes(
                record(pg_engine, reports_for(flow_execution_id, status, 1, "load"))
            )
        lines = [watch.next_line() for _ in range(2)]
        assert watch.interrupt() == 0
    notifier.close()
    for line, status in zip(lines, ("queued", "running"), strict=True):
        fields = line.split()
        assert fields[1:] == [status, "load[0]", "flow", flow_execution_id.hex[:8], "attempt", "0"]


def test_a_missing_redis_url_is_a_clear_error(pg_engine: Engine) -> None:
    env = environment(pg_engine, unique_prefix())
    del env["FLOWWORKER_REDIS_URL"]
    done = subprocess.run(
        [*FLOWWORKER, "watch"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "FLOWWORKER_REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_organization_or_flow_execution_is_a_clear_error(pg_engine: Engine) -> None:
    make_flow_execution(pg_engine, "acme")
    env = environment(pg_engine, unique_prefix())
    done = subprocess.run(
        [*FLOWWORKER, "watch", "--org", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (1, "error: no organization named 'nobody'")
    missing = uuid.uuid4()
    done = subprocess.run(
        [*FLOWWORKER, "watch", "--flow-execution", str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"flow execution {missing} does not exist in organization 'acme'" in done.stderr
