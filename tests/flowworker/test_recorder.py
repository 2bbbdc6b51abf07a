"""The recorder's writer against a real database: what it retries and what it isolates."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url, select

from flowworker.config import Settings
from flowworker.pending import PendingReport
from flowworker.recorder import Recorder, database_unavailable
from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus
from tests.pg_cluster import free_port


def test_a_closed_server_is_unavailable_and_a_data_error_is_not(pg_engine: Engine) -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"postgresql://root@127.0.0.1:{free_port()}/x", connect_timeout=2)
    assert database_unavailable(refused.value)
    dsn = make_url(str(pg_engine.url)).set(drivername="postgresql")
    with (
        psycopg.connect(dsn.render_as_string(hide_password=False)) as connection,
        pytest.raises(psycopg.errors.DivisionByZero) as data_error,
    ):
        connection.execute("SELECT 1 / 0")
    assert not database_unavailable(data_error.value)


def test_a_refused_report_is_isolated_and_the_rest_of_its_batch_written(
    pg_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    with transaction(pg_engine) as connection:
        organization_id = ensure_organization(connection, "isolation")
        flow_execution_id = create_flow_execution(connection, organization_id)
    recorder = Recorder(Settings.load({}, {}, database_url=postgres_url, spool_dir=str(tmp_path)))
    good = [TaskReport(flow_execution_id, "t", idx, ExecutionStatus.COMPLETED) for idx in range(3)]
    unknown = TaskReport(uuid.uuid4(), "t", 0, ExecutionStatus.COMPLETED)
    for report in [good[0], unknown, *good[1:]]:
        recorder.record(PendingReport(report, organization_id))
    assert recorder.flush(30), "the batch must not be retried forever"
    with transaction(pg_engine) as connection:
        written = connection.execute(
            select(TaskExecution.task_execution_idx).where(
                TaskExecution.flow_execution_id == flow_execution_id
            )
        ).scalars()
        assert sorted(written) == [0, 1, 2]
    assert recorder.stats.rejected == 1
    recorder.close()
