"""`flowworker serve` runs the app with uvicorn, worker processes included."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.postgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(120)
def test_serve_answers_health_and_openapi(postgres_url: str, postgres_engine: object) -> None:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("flowworker")),
        "serve",
        "--database-url",
        postgres_url,
        "--port",
        str(port),
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "flowworker serve did not start"
                assert server.poll() is None, "flowworker serve exited"
                time.sleep(0.3)
        assert health.json() == {"status": "ok", "database": "ok"}
        schema = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert {"/task-executions", "/task-executions/{task_execution_id}"} <= set(schema["paths"])
        assert "/_bench/bare" not in schema["paths"]
    finally:
        server.terminate()
        server.wait(timeout=30)
