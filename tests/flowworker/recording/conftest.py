"""Fixtures for tests that run real Celery workers against real servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, select

import flowworker
from persistence.models import TaskExecution, TaskExecutionEvent
from tests.conftest import SESSION_TAG
from tests.flowworker.workers import WorkerProcess, wait_until
from tests.servers import RABBITMQ_URL, REDIS_URL, require

ROOT = Path(__file__).resolve().parents[3]


class Recording:
    """One test module's world: a broker queue, a database, a spool and the test's app."""

    def __init__(self, app: Celery, env: dict[str, str], engine: Engine, tmp: Path) -> None:
        self.app = app
        self.env = env
        self.engine = engine
        self.tmp = tmp
        self.workers: list[WorkerProcess] = []

    def start_worker(
        self,
        pool: str = "prefork",
        concurrency: int = 2,
        name: str = "w1",
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        hostname = f"{name}-{uuid.uuid4().hex[:6]}@127.0.0.1"
        worker = WorkerProcess(
            {**self.env, **(env or {})},
            hostname,
            pool,
            concurrency,
            self.tmp / f"{hostname.split('@', maxsplit=1)[0]}.log",
        )
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def records(self, **where: Any) -> list[Any]:
        table = TaskExecution.__table__
        query = select(table).order_by(table.c.task_name, table.c.task_execution_idx)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as connection:
            return list(connection.execute(query))

    def history(self, task_execution_id: uuid.UUID) -> list[str]:
        table = TaskExecutionEvent.__table__
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.to_status)
                .where(table.c.task_execution_id == task_execution_id)
                .order_by(table.c.id)
            )
            return [row[0] for row in rows]

    def wait_for(
        self, count: int, statuses: set[str] | None = None, timeout: float = 60.0, **where: Any
    ) -> list[Any]:
        def ready() -> list[Any] | None:
            rows = self.records(**where)
            done = [r for r in rows if statuses is None or r.status in statuses]
            return rows if len(done) >= count else None

        rows: list[Any] = wait_until(ready, timeout)  # type: ignore[assignment]
        return rows

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


def broker_url(kind: str) -> str:
    if kind == "rabbitmq":
        require("RabbitMQ", RABBITMQ_URL, 5672)
        return RABBITMQ_URL
    require("Redis", REDIS_URL, 6379)
    return REDIS_URL


def _reset_connections(app: Celery) -> None:
    """Forget broker connections made with a previous module's broker URL."""
    # kombu keeps pools in a global registry keyed by URL: drop our references, close nothing
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture(scope="module")
def recording_factory(
    postgres_engine: Engine, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Builds a Recording for a broker kind and database; stops its workers afterwards."""
    made: list[Recording] = []
    saved = dict(os.environ)

    def make(
        broker: str = "redis", database_url: str | None = None, engine: Engine | None = None
    ) -> Recording:
        tmp = tmp_path_factory.mktemp("recording")
        env = {
            **saved,
            "FW_TEST_BROKER_URL": broker_url(broker),
            "FW_TEST_QUEUE": f"fw-{SESSION_TAG}-{uuid.uuid4().hex[:6]}",
            "FLOWWORKER_DATABASE_URL": database_url or postgres_url,
            "FLOWWORKER_SPOOL_DIR": str(tmp / "spool"),
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        from tests.flowworker.celery_app import app

        app.conf.update(
            broker_url=env["FW_TEST_BROKER_URL"], task_default_queue=env["FW_TEST_QUEUE"]
        )
        _reset_connections(app)
        flowworker.install(app)
        recording = Recording(app, env, engine or postgres_engine, tmp)
        made.append(recording)
        return recording

    yield make
    for recording in made:
        recording.stop()
    flowworker.uninstall()
    os.environ.clear()
    os.environ.update(saved)
