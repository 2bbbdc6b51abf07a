"""Finding the real servers the tests use. Missing locally: skip. Missing under CI: fail."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "FLOWWORKER_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FLOWWORKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("FLOWWORKER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def is_reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require(name: str, url: str, default_port: int) -> None:
    if is_reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; under CI every server must be up (.ci/run starts them)")
    pytest.skip(message)
