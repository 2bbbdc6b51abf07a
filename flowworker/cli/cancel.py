"""`flowworker cancel ID`: stop a flow execution; its queued and running tasks are revoked."""

from __future__ import annotations

import uuid

import click

from flowworker.cli.executions import database_url_option, organization_option, parse_uuid
from flowworker.cli.run import prepare_app
from flowworker.flows import FlowRunner


@click.command()
@click.argument("flow_execution_id", metavar="FLOW_EXECUTION_ID", callback=parse_uuid)
@database_url_option
@organization_option
def cancel(
    flow_execution_id: uuid.UUID, database_url: str | None, organization: str | None
) -> None:
    """Cancel a flow execution: revoke what is queued and running; records say cancelled."""
    app, settings = prepare_app(database_url, organization)
    outcome = FlowRunner(app, settings=settings).cancel(flow_execution_id)
    if not outcome.cancelled:
        click.echo(f"flow execution {flow_execution_id} had already ended: {outcome.status}")
        return
    click.echo(
        f"flow execution {flow_execution_id} cancelled; "
        f"{len(outcome.revoked_celery_task_ids)} queued or running task(s) revoked"
    )
