"""`flowworker rerun ID --from TASK`: re-execute a flow execution from one of its tasks."""

from __future__ import annotations

import contextlib
import sys
import uuid

import click
from rich.console import Console

from flowworker.cli.executions import database_url_option, organization_option, parse_uuid
from flowworker.cli.run import prepare_app, watch, with_worker_option
from flowworker.flows import FlowRunner
from flowworker.flows.embedded import EmbeddedWorker
from flowworker.flows.engine import fetch_definition
from flowworker.history import History
from persistence.database import transaction
from persistence.status import ExecutionStatus


@click.command()
@click.argument("flow_execution_id", metavar="FLOW_EXECUTION_ID", callback=parse_uuid)
@click.option("--from", "from_task", required=True, help="The task to run again (and downstream).")
@click.option("--dry-run", is_flag=True, help="List what would run again; change nothing.")
@with_worker_option
@click.option("--detach", is_flag=True, help="Do not watch the re-execution.")
@database_url_option
@organization_option
def rerun(
    flow_execution_id: uuid.UUID,
    from_task: str,
    dry_run: bool,
    with_worker: bool,
    detach: bool,
    database_url: str | None,
    organization: str | None,
) -> None:
    """Mark FROM_TASK and everything downstream stale and run them again with new idx values."""
    app, settings = prepare_app(database_url, organization)
    runner = FlowRunner(app, settings=settings)
    console = Console()
    worker = EmbeddedWorker(app) if with_worker and not dry_run else contextlib.nullcontext()
    with worker:
        outcome = runner.rerun(flow_execution_id, from_task, dry_run=dry_run)
        verb = "would run again" if dry_run else "run again"
        console.print(f"{verb}: {', '.join(outcome.task_names)}")
        stale = ", ".join(f"{name}[{idx}]" for name, idx in outcome.stale) or "none"
        console.print(f"{'would become' if dry_run else 'now'} stale: {stale}")
        if dry_run or detach:
            return
        with History(engine=runner.engine, settings=settings) as history:
            flow_id = history.get_flow_execution(flow_execution_id).flow_id
        assert flow_id is not None  # rerun refuses ad-hoc flow executions
        with transaction(runner.engine, runner.fetch_organization_id()) as connection:
            definition = fetch_definition(connection, flow_id)
        flow = watch(runner, flow_execution_id, definition, console, None)
    if flow.status is not ExecutionStatus.COMPLETED:
        sys.exit(1)
