"""`flowworker demo`: the first thing a new user runs; needs no servers."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from flowworker.config import Settings
from persistence.database import create_database_engine, transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution
from persistence.reports import TaskReport
from persistence.schema import upgrade_database
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions


@click.command()
def demo() -> None:
    """Create the database and record a sample flow execution in it."""
    settings = Settings.load()
    engine = create_database_engine(settings.database_url)
    upgrade_database(engine)
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, settings.organization)
        flow_execution_id = create_flow_execution(connection, organization_id)
    reports = [
        TaskReport(flow_execution_id, "extract", 0, ExecutionStatus.QUEUED, input={"rows": 3}),
        TaskReport(flow_execution_id, "extract", 0, ExecutionStatus.RUNNING),
        TaskReport(flow_execution_id, "extract", 0, ExecutionStatus.COMPLETED, output=[1, 2, 3]),
        TaskReport(flow_execution_id, "load", 0, ExecutionStatus.RUNNING),
        TaskReport(
            flow_execution_id,
            "load",
            0,
            ExecutionStatus.FAILED,
            error={"message": "disk full", "type": "OSError", "traceback": ""},
        ),
        TaskReport(flow_execution_id, "load", 1, ExecutionStatus.COMPLETED, output={"loaded": 3}),
    ]
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(connection, reports)
        rows = (
            Session(connection)
            .execute(
                select(TaskExecution)
                .where(TaskExecution.flow_execution_id == flow_execution_id)
                .order_by(TaskExecution.task_name, TaskExecution.task_execution_idx)
            )
            .scalars()
        )
        table = Table(title=f"flow execution {flow_execution_id}")
        for heading in ("task", "idx", "status", "output / error"):
            table.add_column(heading)
        for row in rows:
            detail = row.output if row.error is None else row.error["message"]
            table.add_row(row.task_name, str(row.task_execution_idx), row.status, str(detail))
    console = Console()
    console.print(table)
    console.print(f"recorded in {engine.url.render_as_string()}")
