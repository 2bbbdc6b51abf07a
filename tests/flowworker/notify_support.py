"""Helpers for the notification tests: a private redis-server that a test may kill, pause
and restart (never the shared one on 6379), unique channel prefixes, and real records."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from redis.client import PubSub
from sqlalchemy import Engine

from persistence.database import transaction
from persistence.reports import TaskReport, UpsertResult
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions
from tests.flowworker.workers import wait_until
from tests.servers import REDIS_URL, require

REDIS_SERVER = "redis-server"


def unique_prefix() -> str:
    return f"fwtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def shared_redis_url() -> str:
    require("Redis", REDIS_URL, 6379)
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A redis-server process of this test alone, on a port of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            wait_for(lambda: _answers_ping(client), what=f"redis-server on port {self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self.resume()
            self._process.kill()
            self._process.wait(timeout=30)
            self._process = None

    def pause(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis_server() -> Iterator[RedisServer]:
    if subprocess.run(["which", REDIS_SERVER], capture_output=True, check=False).returncode:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; under CI it must be")
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _answers_ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = 30.0) -> Any:
    """Poll `condition` until it is truthy; fail the test after `timeout` seconds."""
    try:
        return wait_until(condition, timeout, interval=0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def listen(url: str, *channels: str) -> PubSub:
    """A raw pub/sub connection, subscribed (confirmed by Redis) to `channels`."""
    pubsub = redis.Redis.from_url(url).pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(*channels)
    for _ in channels:
        wait_for(lambda: pubsub.get_message(timeout=1), what="subscribe confirmation")
    return pubsub


def receive_messages(pubsub: PubSub, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Exactly the next `count` published messages (fails the test if they do not come)."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message is not None and message["type"] == "message":
            messages.append(message)
    assert len(messages) == count, f"received {len(messages)} of {count} messages"
    return messages


def record(engine: Engine, reports: Sequence[TaskReport]) -> list[UpsertResult]:
    """Write reports in one committed transaction, as the recorder does."""
    with transaction(engine) as connection:
        return upsert_task_executions(connection, reports)


def reports_for(
    flow_execution_id: uuid.UUID, status: ExecutionStatus, count: int, task_name: str = "task"
) -> list[TaskReport]:
    return [
        TaskReport(flow_execution_id, task_name, idx, status, celery_task_id=f"celery-{idx}")
        for idx in range(count)
    ]
