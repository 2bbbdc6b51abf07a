from __future__ import annotations

import uuid

from sqlalchemy import Engine, select

from persistence.database import transaction
from persistence.hierarchy import (
    AdHocFlowExecution,
    create_flow_execution,
    ensure_flow_executions,
    ensure_organization,
    recorded_keys,
)
from persistence.models import FlowExecution
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions


def test_ensure_flow_executions_creates_the_missing_ones_once(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "ad-hoc")
    first, second = (
        AdHocFlowExecution(uuid.uuid4(), organization_id, f"root-{n}") for n in range(2)
    )
    with transaction(engine, organization_id) as connection:
        ensure_flow_executions(connection, [first])
    with transaction(engine, organization_id) as connection:
        # the first exists already, the second is named twice: one new row
        ensure_flow_executions(connection, [first, second, second])
        ensure_flow_executions(connection, [])
    with transaction(engine) as connection:
        rows = connection.execute(
            select(FlowExecution.id, FlowExecution.celery_root_id, FlowExecution.status)
        ).all()
    assert sorted(rows, key=lambda row: row.celery_root_id) == [
        (first.id, "root-0", "running"),
        (second.id, "root-1", "running"),
    ]


def test_recorded_keys_names_the_executions_that_have_a_record(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "keys")
        flow_execution_id = create_flow_execution(connection, organization_id)
    reports = [TaskReport(flow_execution_id, "t", idx, ExecutionStatus.QUEUED) for idx in (0, 2)]
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(connection, reports)
    asked = [(flow_execution_id, "t", idx) for idx in range(3)]
    asked += [(flow_execution_id, "other", 0), (uuid.uuid4(), "t", 0), asked[0]]
    with transaction(engine, organization_id) as connection:
        assert recorded_keys(connection, asked) == {
            (flow_execution_id, "t", 0),
            (flow_execution_id, "t", 2),
        }
        assert recorded_keys(connection, []) == set()
