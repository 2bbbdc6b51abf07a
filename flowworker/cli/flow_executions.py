"""`flowworker flow-executions show ID`: a flow execution, its tasks and what went wrong."""

from __future__ import annotations

import uuid

import click
from rich import box
from rich.console import Console
from rich.table import Table

from flowworker.cli.executions import (
    database_url_option,
    error_message,
    executions_table,
    flower_task_url,
    json_option,
    open_history,
    organization_option,
    parse_uuid,
    print_json,
    when,
)
from persistence.records import FlowExecutionRecord, TaskExecutionRecord
from persistence.status import ExecutionStatus


@click.group("flow-executions")
def flow_executions() -> None:
    """Inspect flow executions."""


@flow_executions.command("show")
@click.argument("flow_execution_id", metavar="ID", callback=parse_uuid)
@click.option("--include-deleted", is_flag=True, help="Show soft-deleted task executions too.")
@json_option
@database_url_option
@organization_option
def show_flow_execution(
    flow_execution_id: uuid.UUID,
    include_deleted: bool,
    as_json: bool,
    database_url: str | None,
    organization: str | None,
) -> None:
    """A flow execution: summary, task executions, failed attempts with their errors."""
    with open_history(database_url, organization) as history:
        flow = history.get_flow_execution(flow_execution_id, include_deleted=include_deleted)
        flower_url = history.settings.flower_url
    if as_json:
        print_json(flow.to_dict())
        return
    console = Console()
    console.print(summary_grid(flow))
    console.print(
        executions_table(flow.task_executions, "task executions", with_flow_execution=False)
    )
    failed = [t for t in flow.task_executions if t.status is ExecutionStatus.FAILED]
    if failed:
        console.print(failed_table(failed, flower_url))


def summary_grid(flow: FlowExecutionRecord) -> Table:
    summary = flow.summary
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    counts = ", ".join(f"{status} {count}" for status, count in summary.counts_by_status.items())
    duration = "" if summary.duration_seconds is None else f"{summary.duration_seconds:.3f} s"
    for name, value in (
        ("flow execution", str(flow.id)),
        ("status", flow.status.value),
        ("created (UTC)", when(flow.created_at)),
        ("started (UTC)", when(summary.started_at)),
        ("finished (UTC)", when(summary.finished_at)),
        ("duration", duration),
        ("task executions", f"{summary.task_execution_count} ({counts})" if counts else "0"),
        ("failed tasks", ", ".join(summary.failed_tasks) or "none"),
    ):
        grid.add_row(name, value)
    return grid


def failed_table(failed: list[TaskExecutionRecord], flower_url: str | None) -> Table:
    table = Table(title="failed attempts", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("task")
    table.add_column("idx", justify="right")
    table.add_column("error", overflow="fold")
    if flower_url:
        table.add_column("flower", overflow="fold")
    for task in failed:
        row = [task.task_name, str(task.task_execution_idx), error_message(task)]
        if flower_url:
            row.append(
                flower_task_url(flower_url, task.celery_task_id) if task.celery_task_id else ""
            )
        table.add_row(*row)
    return table
