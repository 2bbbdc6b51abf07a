"""`flowworker purge`: delete old records in small batches, each its own short transaction.

Exit codes: 0 done; 1 the database could not be reached; 2 a bad option.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy import Engine

from flowworker.cli.reap import database_url_option, parse_age
from flowworker.config import Settings
from persistence.database import create_database_engine, transaction
from persistence.errors import InvalidStatus
from persistence.reports import parse_status, utcnow
from persistence.retention import (
    FINISHED_STATUSES,
    count_empty_flow_executions,
    delete_empty_flow_executions_batch,
    delete_task_executions_batch,
    fetch_organization_ids,
    fetch_purge_counts,
)
from persistence.status import ExecutionStatus


@dataclass
class PurgeReport:
    created_before: dt.datetime
    dry_run: bool
    task_executions: Counter[ExecutionStatus] = field(default_factory=Counter)
    flow_executions: int = 0
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "created_before": self.created_before.isoformat(),
            "task_executions": {str(s): n for s, n in sorted(self.task_executions.items())},
            "task_executions_total": sum(self.task_executions.values()),
            "flow_executions": self.flow_executions,
            "batches": self.batches,
        }


def purge_records(
    engine: Engine,
    created_before: dt.datetime,
    statuses: tuple[ExecutionStatus, ...] = FINISHED_STATUSES,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    flow_executions: bool = True,
) -> PurgeReport:
    """Delete (or, dry, count) the records created before `created_before` with one of
    `statuses`, organization by organization, `batch_size` rows per transaction; then the
    flow executions left without any task execution, when `flow_executions`."""
    report = PurgeReport(created_before, dry_run)
    with engine.connect() as connection:
        organization_ids = fetch_organization_ids(connection)
    for organization_id in organization_ids:
        if dry_run:
            with transaction(engine, organization_id) as connection:
                report.task_executions.update(
                    fetch_purge_counts(connection, organization_id, created_before, statuses)
                )
                if flow_executions:
                    report.flow_executions += count_empty_flow_executions(
                        connection, organization_id, created_before
                    )
            continue
        for status in statuses:
            after = None
            while True:
                with transaction(engine, organization_id) as connection:
                    batch = delete_task_executions_batch(
                        connection,
                        organization_id,
                        status,
                        created_before,
                        batch_size=batch_size,
                        after=after,
                    )
                if batch.last is None:
                    break
                report.batches += 1
                report.task_executions[status] += batch.deleted
                after = batch.last
        while flow_executions:
            with transaction(engine, organization_id) as connection:
                deleted = delete_empty_flow_executions_batch(
                    connection, organization_id, created_before, batch_size=batch_size
                )
            if not deleted:
                break
            report.batches += 1
            report.flow_executions += deleted
    return report


def _parse_statuses(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[ExecutionStatus, ...]:
    if not values:
        return FINISHED_STATUSES
    try:
        return tuple(
            dict.fromkeys(
                parse_status(part.strip())
                for value in values
                for part in value.split(",")
                if part.strip()
            )
        )
    except InvalidStatus as exc:
        raise click.BadParameter(str(exc), param=param) from None


@click.command()
@click.option(
    "--older-than",
    required=True,
    callback=parse_age,
    help="Delete records created longer ago than this (30d, 12h).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    callback=_parse_statuses,
    help="Only these statuses (repeat, or comma-separate). Default: every finished status "
    "(completed, failed, cancelled, stale, deleted); queued and running only when named.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Records per transaction.",
)
@click.option(
    "--keep-flow-executions",
    is_flag=True,
    help="Keep flow executions left without task executions (they are purged by default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@database_url_option
def purge(
    older_than: dt.timedelta,
    statuses: tuple[ExecutionStatus, ...],
    dry_run: bool,
    batch_size: int,
    keep_flow_executions: bool,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Delete task executions (with their status history) older than --older-than.

    Deletes in batches of --batch-size, each its own short transaction, skipping rows that
    a writer holds at that moment, so workers keep recording while it runs. Flow
    executions older than the cut-off that have no task execution left are deleted too.
    """
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    try:
        report = purge_records(
            engine,
            utcnow() - older_than,
            statuses,
            batch_size=batch_size,
            dry_run=dry_run,
            flow_executions=not keep_flow_executions,
        )
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    total = sum(report.task_executions.values())
    click.echo(
        f"{verb} {total} task execution(s) created before "
        f"{report.created_before:%Y-%m-%d %H:%M:%S} UTC"
        + ("" if dry_run else f" in {report.batches} batch(es)")
    )
    for status in statuses:
        click.echo(f"  {status!s:<10} {report.task_executions.get(status, 0)}")
    if not keep_flow_executions:
        click.echo(f"{verb} {report.flow_executions} flow execution(s) left without tasks")
