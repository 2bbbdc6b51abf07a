"""`flowworker watch`: live status lines, for people (colour) or scripts (JSON lines)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import click
from sqlalchemy import Engine, select

from flowworker.config import Settings
from flowworker.notification import Notification
from flowworker.subscribe import subscribe
from persistence.database import create_database_engine, transaction
from persistence.errors import ConfigurationError, UnknownFlowExecution
from persistence.hierarchy import fetch_organization_id
from persistence.models import FlowExecution
from persistence.status import ExecutionStatus

STATUS_COLOURS = {
    ExecutionStatus.QUEUED: "blue",
    ExecutionStatus.RUNNING: "yellow",
    ExecutionStatus.COMPLETED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.CANCELLED: "magenta",
    ExecutionStatus.STALE: "bright_black",
    ExecutionStatus.DELETED: "bright_black",
}
_EVERYTHING = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@click.command()
@click.option(
    "--flow-execution",
    "flow_execution_id",
    type=click.UUID,
    help="Watch one flow execution (its current state first), not the whole organization.",
)
@click.option("--org", "organization", help="Organization name or id ($FLOWWORKER_ORGANIZATION).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@click.option("--redis-url", help="Redis with the notifications ($FLOWWORKER_REDIS_URL).")
@click.option("--database-url", help="Database to catch up from ($FLOWWORKER_DATABASE_URL).")
def watch(
    flow_execution_id: uuid.UUID | None,
    organization: str | None,
    as_json: bool,
    redis_url: str | None,
    database_url: str | None,
) -> None:
    """Print every status change as it happens; Ctrl-C to stop.

    After Redis comes back from an outage, the changes missed meanwhile are re-read from the
    database and printed too (marked as catch-up).
    """
    settings = Settings.load(
        organization=organization, redis_url=redis_url, database_url=database_url
    )
    if not settings.redis_url:
        raise ConfigurationError(
            "no Redis to watch: set FLOWWORKER_REDIS_URL (or pass --redis-url), "
            "the Redis the workers publish notifications to"
        )
    engine = create_database_engine(settings.database_url)
    with transaction(engine) as connection:
        organization_id = fetch_organization_id(connection, settings.organization)
    if flow_execution_id is not None:
        check_flow_execution(engine, organization_id, settings.organization, flow_execution_id)
    try:
        with subscribe(
            settings.redis_url,
            organization_id,
            flow_execution_id,
            engine=engine,
            channel_prefix=settings.channel_prefix,
            catch_up_since=_EVERYTHING if flow_execution_id else None,
        ) as live:
            scope = f"organization {settings.organization!r}"
            if flow_execution_id:
                scope = f"flow execution {flow_execution_id} of {scope}"
            waiting = "" if live.connected else " (Redis unreachable; retrying)"
            click.echo(f"watching {scope}{waiting}; Ctrl-C to stop", err=True)
            for notification in live:
                click.echo(format_json(notification) if as_json else format_line(notification))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: exit 0, no traceback
    finally:
        engine.dispose()


def check_flow_execution(
    engine: Engine, organization_id: uuid.UUID, organization: str, flow_execution_id: uuid.UUID
) -> None:
    with transaction(engine, organization_id) as connection:
        found = connection.execute(
            select(FlowExecution.id).where(
                FlowExecution.id == flow_execution_id,
                FlowExecution.organization_id == organization_id,
            )
        ).scalar()
    if found is None:
        raise UnknownFlowExecution(
            f"flow execution {flow_execution_id} does not exist in organization "
            f"{organization!r}; pass --org (or set FLOWWORKER_ORGANIZATION) to its organization"
        )


def format_line(notification: Notification) -> str:
    """`12:03:04.123  completed  extract[0]  flow 1a2b3c4d  attempt 0` in colour."""
    when = notification.updated_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    status = click.style(
        f"{notification.status.value:<9}", fg=STATUS_COLOURS.get(notification.status), bold=True
    )
    line = (
        f"{when}  {status}  {notification.task_name}[{notification.task_execution_idx}]  "
        f"flow {notification.flow_execution_id.hex[:8]}  attempt {notification.attempt}"
    )
    if notification.catch_up:
        line += click.style("  (catch-up)", dim=True)
    return line


def format_json(notification: Notification) -> str:
    payload = notification.to_dict()
    payload["catch_up"] = notification.catch_up
    return json.dumps(payload, separators=(",", ":"))
