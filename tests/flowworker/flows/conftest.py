"""Real Celery workers (subprocesses) running flows against the session's PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

import flowworker
from flowworker.flows import FlowDefinition, FlowRunner, parse_flow
from flowworker.flows.worker import register
from persistence.models import FlowExecution, TaskExecution
from tests.conftest import SESSION_TAG
from tests.flowworker.workers import WorkerProcess, wait_until
from tests.servers import REDIS_URL, require

ROOT = Path(__file__).resolve().parents[3]


class FlowWorker(WorkerProcess):
    """A worker of `tests.flowworker.flows.flow_app` (the tasks app and the flow engine)."""

    def __init__(self, env: dict[str, str], hostname: str, log: Path, concurrency: int = 2):
        super().__init__(
            env, hostname, "prefork", concurrency, log, app="tests.flowworker.flows.flow_app"
        )


class Flows:
    """Runs flows on real workers and reads what they recorded."""

    def __init__(self, runner: FlowRunner, engine: Engine, worker: FlowWorker) -> None:
        self.runner = runner
        self.engine = engine
        self.worker = worker

    def run(self, text: str, inputs: dict[str, Any] | None = None) -> uuid.UUID:
        # a unique flow name per test: each stores its own definition
        name = f"t{uuid.uuid4().hex[:8]}"
        definition: FlowDefinition = parse_flow(f"name: {name}\nversion: '1'\n{text}")
        return self.runner.run(definition, inputs)

    def records(self, flow_execution_id: uuid.UUID, **where: Any) -> list[Any]:
        table = TaskExecution.__table__
        query = (
            select(table)
            .where(table.c.flow_execution_id == flow_execution_id)
            .order_by(table.c.task_name, table.c.task_execution_idx)
        )
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as connection:
            return list(connection.execute(query))

    def status(self, flow_execution_id: uuid.UUID) -> str:
        table = FlowExecution.__table__
        with self.engine.connect() as connection:
            return str(
                connection.execute(
                    select(table.c.status).where(table.c.id == flow_execution_id)
                ).scalar_one()
            )

    def wait_finished(self, flow_execution_id: uuid.UUID, timeout: float = 90.0) -> str:
        """The flow execution's final status, once no record of it is queued or running."""

        def finished() -> str | None:
            status = self.status(flow_execution_id)
            busy = any(r.status in ("queued", "running") for r in self.records(flow_execution_id))
            return status if status in ("completed", "failed", "cancelled") and not busy else None

        try:
            final: str = wait_until(finished, timeout)  # type: ignore[assignment]
        except TimeoutError:
            log = self.worker.log.read_text()[-6000:]
            raise TimeoutError(f"flow did not finish; worker log:\n{log}") from None
        return final

    def by_task(self, flow_execution_id: uuid.UUID) -> dict[str, list[Any]]:
        grouped: dict[str, list[Any]] = {}
        for record in self.records(flow_execution_id):
            grouped.setdefault(record.task_name, []).append(record)
        return grouped


@pytest.fixture(scope="module")
def flows(
    postgres_engine: Engine, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flows]:
    require("Redis", REDIS_URL, 6379)
    tmp = tmp_path_factory.mktemp("flows")
    saved = dict(os.environ)
    env = {
        **saved,
        "FW_TEST_BROKER_URL": REDIS_URL,
        "FW_TEST_QUEUE": f"fw-flows-{SESSION_TAG}-{uuid.uuid4().hex[:6]}",
        "FLOWWORKER_DATABASE_URL": postgres_url,
        "FLOWWORKER_SPOOL_DIR": str(tmp / "spool"),
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    from tests.flowworker.flows.flow_app import app

    app.conf.update(broker_url=env["FW_TEST_BROKER_URL"], task_default_queue=env["FW_TEST_QUEUE"])
    app._pool = None  # forget connections made for another broker URL
    app.amqp._producer_pool = None
    flowworker.install(app)
    register(app)
    hostname = f"flows-{uuid.uuid4().hex[:6]}@127.0.0.1"
    worker = FlowWorker(env, hostname, tmp / "worker.log")
    try:
        worker.wait_ready()
        yield Flows(FlowRunner(app, engine=postgres_engine), postgres_engine, worker)
    finally:
        worker.stop()
        flowworker.uninstall()
        os.environ.clear()
        os.environ.update(saved)


def wait_for_status(flows: Flows, flow_execution_id: uuid.UUID, task_name: str, status: str) -> Any:
    def found() -> Any:
        for record in flows.records(flow_execution_id, task_name=task_name):
            if record.status == status:
                return record
        return None

    return wait_until(found, 60.0)


__all__ = ["Flows", "wait_for_status"]
