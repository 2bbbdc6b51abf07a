"""The recorder's memory-only reports (queued, running) through a database outage.

The outage is real: the test's own PostgreSQL database stops accepting connections
(`ALLOW_CONNECTIONS false`, its sessions terminated), on the shared server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url, select

from flowworker.config import Settings
from flowworker.pending import PendingReport
from flowworker.recorder import Recorder
from persistence.database import create_database_engine, transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution
from persistence.reports import TaskReport
from persistence.schema import upgrade_database
from persistence.status import ExecutionStatus
from tests.flowworker.workers import wait_until
from tests.persistence.helpers import history_steps
from tests.servers import POSTGRES_ADMIN_URL, require

S = ExecutionStatus


@dataclass
class OwnDatabase:
    url: str
    engine: Engine
    name: str
    admin_dsn: str

    def admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def block(self) -> None:
        """The database goes away: new connections are refused, open ones are cut."""
        self.admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )

    def unblock(self) -> None:
        self.admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def own_database() -> Iterator[OwnDatabase]:
    require("PostgreSQL", POSTGRES_ADMIN_URL, 5432)
    name = f"flowworker_review_{uuid.uuid4().hex[:12]}"
    admin = make_url(POSTGRES_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = create_database_engine(url)
    upgrade_database(engine)
    database = OwnDatabase(url, engine, name, dsn)
    yield database
    engine.dispose()
    database.unblock()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _flow_execution(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "outage")
        return organization_id, create_flow_execution(connection, organization_id)


def _recorder(database: OwnDatabase, spool: Path) -> Recorder:
    return Recorder(Settings.load({}, {}, database_url=database.url, spool_dir=str(spool)))


def _records(engine: Engine) -> list[tuple[int, str]]:
    with transaction(engine) as connection:
        rows = connection.execute(
            select(TaskExecution.task_execution_idx, TaskExecution.status).order_by(
                TaskExecution.task_execution_idx
            )
        )
        return [(row.task_execution_idx, row.status) for row in rows]


def test_a_memory_only_report_outlives_the_writers_retry_wait(
    own_database: OwnDatabase, tmp_path: Path
) -> None:
    """The writer waits a second after a failed write; a memory-only report it takes from
    the queue meanwhile must wait again, not vanish (it is in no journal)."""
    organization_id, flow_execution_id = _flow_execution(own_database.engine)
    recorder = _recorder(own_database, tmp_path)
    own_database.block()
    queued = TaskReport(flow_execution_id, "t", 0, S.QUEUED)
    recorder.record(PendingReport(queued, organization_id), durable=False)
    wait_until(lambda: recorder.stats.errors >= 1, timeout=30, interval=0.01)
    time.sleep(0.5)  # within the writer's retry wait
    own_database.unblock()
    wait_until(lambda: recorder.flush(1), timeout=30)
    assert _records(own_database.engine) == [(0, "queued")]
    recorder.close()


def test_flush_is_false_while_a_memory_only_report_waits_for_the_database(
    own_database: OwnDatabase, tmp_path: Path
) -> None:
    organization_id, flow_execution_id = _flow_execution(own_database.engine)
    recorder = _recorder(own_database, tmp_path)
    own_database.block()
    running = TaskReport(flow_execution_id, "t", 0, S.RUNNING)
    recorder.record(PendingReport(running, organization_id), durable=False)
    wait_until(lambda: recorder.stats.errors >= 1, timeout=30, interval=0.01)
    assert not recorder.flush(0.5), "nothing is written while the database is away"
    own_database.unblock()
    wait_until(lambda: recorder.flush(1), timeout=30)
    assert _records(own_database.engine) == [(0, "running")]
    recorder.close()


def test_a_finished_report_behind_a_failed_write_of_its_running_report_keeps_the_history(
    own_database: OwnDatabase, tmp_path: Path
) -> None:
    """The writer is writing a task's running report when the task finishes (so the finished
    report cannot absorb it), and that write fails: the history still reads queued ->
    running -> completed, as when both were written in order."""
    organization_id, flow_execution_id = _flow_execution(own_database.engine)
    recorder = _recorder(own_database, tmp_path)
    recorder.flush(10)  # the writer is connected and idle
    started = time.time()
    blocker = psycopg.connect(
        make_url(own_database.url).set(drivername="postgresql").render_as_string(False)
    )
    blocker.execute("LOCK TABLE task_executions IN ACCESS EXCLUSIVE MODE")
    running = TaskReport(
        flow_execution_id,
        "t",
        0,
        S.RUNNING,
        queued_at=TaskReport(flow_execution_id, "t", 0, S.QUEUED).at,
    )
    recorder.record(PendingReport(running, organization_id), durable=False)
    # the writer took it and waits on the lock
    wait_until(lambda: recorder._writing_unjournaled == 1, timeout=30, interval=0.01)
    wait_until(lambda: recorder._stuck(0.2), timeout=30, interval=0.01)
    completed = TaskReport(flow_execution_id, "t", 0, S.COMPLETED, output=1)
    recorder.record(PendingReport(completed, organization_id))
    cut = threading.Thread(target=own_database.block)
    cut.start()
    cut.join()
    blocker.close()
    wait_until(lambda: recorder.stats.errors >= 1, timeout=30, interval=0.01)
    own_database.unblock()
    wait_until(lambda: recorder.flush(1), timeout=30)
    recorder.close()
    assert _records(own_database.engine) == [(0, "completed")]
    assert history_steps(own_database.engine) == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ], f"took {time.time() - started:.1f} s"


class _PausingUnwritten(dict):  # type: ignore[type-arg]
    """The recorder's `_unwritten`, pausing the writer right after it takes a report out
    (before it counts it as being written) until the test has looked."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = threading.Event()
        self.resume = threading.Event()

    def __delitem__(self, key: object) -> None:
        super().__delitem__(key)
        self.taken.set()
        self.resume.wait(2.0)


def test_flush_never_answers_between_the_writer_taking_a_report_and_writing_it(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    with transaction(pg_engine) as connection:
        organization_id = ensure_organization(connection, "taking")
        flow_execution_id = create_flow_execution(connection, organization_id)
    recorder = Recorder(Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)))
    recorder.backlog()  # the process state exists
    unwritten = _PausingUnwritten()
    recorder._unwritten = unwritten
    running = TaskReport(flow_execution_id, "t", 0, S.RUNNING)
    recorder.record(PendingReport(running, organization_id), durable=False)
    assert unwritten.taken.wait(10)
    try:
        assert recorder.flush(10)
        with transaction(pg_engine) as connection:
            written = connection.execute(select(TaskExecution.status)).scalars().all()
        assert written == ["running"], "flush answered True before the report was written"
    finally:
        unwritten.resume.set()
        recorder.close()
