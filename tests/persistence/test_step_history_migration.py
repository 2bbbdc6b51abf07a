"""Migration 0005 (history events for folded steps), up and down, with records in place."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace

from sqlalchemy import Engine

from persistence.database import transaction
from persistence.reports import TaskReport
from persistence.schema import downgrade_database, upgrade_database
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_execution
from tests.persistence.helpers import history_steps, make_flow_execution
from tests.persistence.test_migrations import (  # noqa: F401 (fixtures)
    fresh_engine,
    fresh_url,
    trigger_names,
)

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _write(engine: Engine, organization_id: uuid.UUID, report: TaskReport) -> int:
    with transaction(engine, organization_id) as connection:
        return upsert_task_execution(connection, report).version


def test_0005_up_and_down_with_records(fresh_engine: Engine) -> None:  # noqa: F811
    engine = fresh_engine
    upgrade_database(engine, "0004_flow_tasks")
    triggers = trigger_names(engine)
    organization_id, flow_execution_id = make_flow_execution(engine)
    _write(engine, organization_id, TaskReport(flow_execution_id, "t", 0, S.QUEUED, at=T0))

    upgrade_database(engine, "0005_step_history")
    assert trigger_names(engine) == triggers
    folded = TaskReport(
        flow_execution_id,
        "t",
        0,
        S.COMPLETED,
        at=T0 + dt.timedelta(seconds=2),
        started_at=T0 + dt.timedelta(seconds=1),
    )
    assert _write(engine, organization_id, folded) == 3
    assert history_steps(engine, task_execution_idx=0) == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ]
    new = TaskReport(flow_execution_id, "t", 1, S.FAILED, at=T0, queued_at=T0, started_at=T0)
    assert _write(engine, organization_id, new) == 3
    assert history_steps(engine, task_execution_idx=1) == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "failed", 3),
    ]

    downgrade_database(engine, "0004_flow_tasks")
    assert trigger_names(engine) == triggers
    for status in (S.QUEUED, S.RUNNING, S.COMPLETED):
        _write(engine, organization_id, TaskReport(flow_execution_id, "t", 2, status, at=T0))
    assert history_steps(engine, task_execution_idx=2) == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ]

    upgrade_database(engine, "0005_step_history")
    assert trigger_names(engine) == triggers
    assert _write(engine, organization_id, replace(folded, task_execution_idx=3, queued_at=T0)) == 3
    assert [version for *_, version in history_steps(engine, task_execution_idx=3)] == [1, 2, 3]
