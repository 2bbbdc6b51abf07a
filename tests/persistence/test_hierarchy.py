from __future__ import annotations

import uuid

from sqlalchemy import Engine, select

from persistence.database import transaction
from persistence.hierarchy import AdHocFlowExecution, ensure_flow_executions, ensure_organization
from persistence.models import FlowExecution


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
