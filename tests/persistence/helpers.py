from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, select

from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution, TaskExecutionEvent


def make_flow_execution(engine: Engine, organization: str = "acme") -> tuple[uuid.UUID, uuid.UUID]:
    """(organization_id, flow_execution_id) of a new flow execution."""
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, organization)
        return organization_id, create_flow_execution(connection, organization_id)


def history_steps(engine: Engine, **where: Any) -> list[tuple[str | None, str, int]]:
    """(from_status, to_status, version) of every history event of the task executions whose
    columns equal `where` (all of them when empty), oldest first."""
    query = (
        select(
            TaskExecutionEvent.from_status, TaskExecutionEvent.to_status, TaskExecutionEvent.version
        )
        .join(TaskExecution, TaskExecution.id == TaskExecutionEvent.task_execution_id)
        .where(*(getattr(TaskExecution, name) == value for name, value in where.items()))
        .order_by(TaskExecutionEvent.id)
    )
    with transaction(engine) as connection:
        return [(row.from_status, row.to_status, row.version) for row in connection.execute(query)]


def record_statuses(engine: Engine, flow_execution_id: uuid.UUID) -> dict[int, str]:
    """{task_execution_idx: status} of the records of one flow execution."""
    with transaction(engine) as connection:
        rows = connection.execute(
            select(TaskExecution.task_execution_idx, TaskExecution.status).where(
                TaskExecution.flow_execution_id == flow_execution_id
            )
        )
        return {row[0]: row[1] for row in rows}
