"""`purge` deletes old records in small batches, with their history; a dry run counts."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine, func, select, update

from flowworker.cli import cli
from flowworker.cli.purge import purge_records
from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import Base, FlowExecution, TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport, utcnow
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

_te = Base.metadata.tables[TaskExecution.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_events = Base.metadata.tables[TaskExecutionEvent.__tablename__]

DONE = [ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED]


def _make_records(engine: Engine, count: int, status: ExecutionStatus, age_days: int) -> Any:
    """`count` records of `status` in a new flow execution created `age_days` ago."""
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
    with transaction(engine, organization_id) as connection:
        flow_execution_id = create_flow_execution(connection, organization_id)
        reports = []
        for idx in range(count):
            for step in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, status):
                reports.append(TaskReport(flow_execution_id, "step", idx, step))
                if step is status:
                    break
        upsert_task_executions(connection, reports)
        then = utcnow() - dt.timedelta(days=age_days)
        # back-date them, as if written `age_days` ago (no status change: no new event)
        connection.execute(
            update(_te).where(_te.c.flow_execution_id == flow_execution_id).values(created_at=then)
        )
        connection.execute(
            update(_fe)
            .where(_fe.c.id == flow_execution_id)
            .values(created_at=then, updated_at=then)
        )
    return flow_execution_id


def _count(engine: Engine, table: Any, **where: Any) -> int:
    query = select(func.count()).select_from(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


def test_purge_deletes_old_finished_records_in_batches_with_their_history(engine: Engine) -> None:
    old = [_make_records(engine, 3, status, age_days=40) for status in DONE]
    old_running = _make_records(engine, 2, ExecutionStatus.RUNNING, age_days=40)
    recent = _make_records(engine, 4, ExecutionStatus.COMPLETED, age_days=1)
    events_before = _count(engine, _events)
    assert events_before == 3 * 3 * 3 + 2 * 2 + 4 * 3

    report = purge_records(engine, utcnow() - dt.timedelta(days=30), batch_size=2)

    assert dict(report.task_executions) == dict.fromkeys(DONE, 3)
    assert report.batches >= 6, "three records per status in batches of two"
    # the history of the deleted records went with them; the rest kept theirs
    assert _count(engine, _events) == 2 * 2 + 4 * 3
    assert _count(engine, _te, flow_execution_id=old_running) == 2, "running kept by default"
    assert _count(engine, _te, flow_execution_id=recent) == 4, "recent kept"
    # flow executions left empty are purged too; the others stay
    assert report.flow_executions == 3
    assert all(_count(engine, _fe, id=flow_execution_id) == 0 for flow_execution_id in old)
    assert _count(engine, _fe, id=recent) == 1
    assert _count(engine, _fe, id=old_running) == 1


def test_dry_run_counts_by_status_and_deletes_nothing(engine: Engine) -> None:
    _make_records(engine, 5, ExecutionStatus.COMPLETED, age_days=40)
    _make_records(engine, 2, ExecutionStatus.FAILED, age_days=40)
    _make_records(engine, 2, ExecutionStatus.RUNNING, age_days=40)
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        cli,
        [
            "purge",
            "--older-than",
            "30d",
            "--status",
            "completed,running",
            "--dry-run",
            "--database-url",
            url,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["task_executions"] == {"completed": 5, "running": 2}
    assert document["task_executions_total"] == 7
    assert document["dry_run"] is True
    assert _count(engine, _te) == 9, "a dry run deletes nothing"


def test_status_filter_and_keep_flow_executions(engine: Engine) -> None:
    failed = _make_records(engine, 3, ExecutionStatus.FAILED, age_days=40)
    completed = _make_records(engine, 3, ExecutionStatus.COMPLETED, age_days=40)
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        cli,
        [
            "purge",
            "--older-than",
            "30d",
            "--status",
            "failed",
            "--keep-flow-executions",
            "--database-url",
            url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "deleted 3 task execution(s)" in result.output
    assert _count(engine, _te, flow_execution_id=failed) == 0
    assert _count(engine, _te, flow_execution_id=completed) == 3
    assert _count(engine, _fe, id=failed) == 1, "--keep-flow-executions keeps the empty one"


def test_bad_options_are_usage_errors(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    for arguments, message in (
        (["--older-than", "thirty days"], "is not an age"),
        (["--older-than", "30d", "--status", "finished"], "invalid status 'finished'"),
    ):
        result = CliRunner().invoke(cli, ["purge", *arguments, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_purge_leaves_other_flow_executions_untouched(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
    with transaction(engine, organization_id) as connection:
        fresh_empty = create_flow_execution(connection, organization_id)
    purge_records(engine, utcnow() - dt.timedelta(days=30))
    assert _count(engine, _fe, id=fresh_empty) == 1
    assert isinstance(fresh_empty, uuid.UUID)
