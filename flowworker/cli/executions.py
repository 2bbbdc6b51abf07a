"""`flowworker executions list|show`: task executions as tables for people, JSON for scripts.

Exit codes: 0 done; 1 an error (unknown id or organization, unreachable database); 2 a usage
error (a bad filter, id or cursor), with a message naming the bad value. With `--json`,
stdout holds exactly one JSON document and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from flowworker.config import Settings
from flowworker.history import History
from persistence.errors import InvalidQuery, InvalidStatus
from persistence.filters import Order, decode_cursor
from persistence.queries import MAX_LIMIT
from persistence.records import TaskExecutionRecord
from persistence.reports import parse_status
from persistence.status import ExecutionStatus

database_url_option = click.option(
    "--database-url",
    envvar="FLOWWORKER_DATABASE_URL",
    help="Database URL (default: $FLOWWORKER_DATABASE_URL, else sqlite:///flowworker.db).",
)
organization_option = click.option(
    "--org",
    "organization",
    envvar="FLOWWORKER_ORGANIZATION",
    help="Organization name or id (default: $FLOWWORKER_ORGANIZATION, else 'default').",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")

_AGO = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def open_history(database_url: str | None, organization: str | None) -> History:
    return History(settings=Settings.load(database_url=database_url, organization=organization))


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def parse_uuid(_ctx: click.Context, param: click.Parameter, value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a UUID", param=param) from None


def parse_moment(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.datetime | None:
    """An ISO 8601 time (UTC when it names no zone) or an age such as 30m, 2h, 7d."""
    if value is None:
        return None
    if match := _AGO.fullmatch(value.strip()):
        amount, unit = match.groups()
        return dt.datetime.now(dt.UTC) - dt.timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2026-11-29T10:00) nor an age (30m, 2h, 7d)",
            param=param,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_statuses(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> frozenset[ExecutionStatus]:
    try:
        return frozenset(
            parse_status(part.strip()) for value in values for part in value.split(",") if part
        )
    except InvalidStatus as exc:
        raise click.BadParameter(str(exc), param=param) from None


def check_cursor(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            decode_cursor(value)
        except InvalidQuery as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return value


def when(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def error_message(record: TaskExecutionRecord) -> str:
    error = record.error
    if isinstance(error, dict):
        return f"{error.get('type') or 'error'}: {error.get('message', '')}"
    return "" if error is None else str(error)


def executions_table(
    records: tuple[TaskExecutionRecord, ...], title: str, *, with_flow_execution: bool = True
) -> Table:
    # ids fold rather than truncate: a person copies them into `show`
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("id", overflow="fold", min_width=8)
    table.add_column("task", overflow="fold", min_width=4)
    table.add_column("idx", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    if with_flow_execution:
        table.add_column("flow execution", overflow="fold", min_width=8)
    for record in records:
        row = [
            str(record.id),
            record.task_name,
            str(record.task_execution_idx),
            record.status.value,
            when(record.created_at),
        ]
        if with_flow_execution:
            row.append(str(record.flow_execution_id))
        table.add_row(*row)
    return table


@click.group()
def executions() -> None:
    """List and inspect task executions."""


@executions.command("list")
@click.option("--flow-execution", callback=parse_uuid, help="Only this flow execution (id).")
@click.option("--task", "task_name", help="Only this task name (case-sensitive).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    callback=parse_statuses,
    help="Only these statuses; repeat or comma-separate (failed,cancelled).",
)
@click.option("--created-after", callback=parse_moment, help="ISO time or age (2h, 7d).")
@click.option("--created-before", callback=parse_moment, help="ISO time or age.")
@click.option("--updated-after", callback=parse_moment, help="ISO time or age.")
@click.option("--updated-before", callback=parse_moment, help="ISO time or age.")
@click.option("--celery-task-id", help="Only the execution(s) of this Celery task id.")
@click.option("--include-deleted", is_flag=True, help="Show soft-deleted records too.")
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_LIMIT))
@click.option("--cursor", callback=check_cursor, help="next_cursor of the previous page.")
@json_option
@database_url_option
@organization_option
def list_executions(
    *,
    flow_execution: uuid.UUID | None,
    task_name: str | None,
    statuses: frozenset[ExecutionStatus],
    created_after: dt.datetime | None,
    created_before: dt.datetime | None,
    updated_after: dt.datetime | None,
    updated_before: dt.datetime | None,
    celery_task_id: str | None,
    include_deleted: bool,
    oldest_first: bool,
    limit: int,
    cursor: str | None,
    as_json: bool,
    database_url: str | None,
    organization: str | None,
) -> None:
    """List task executions, a page at a time."""
    try:
        with open_history(database_url, organization) as history:
            page = history.list_task_executions(
                flow_execution_id=flow_execution,
                task_name=task_name,
                statuses=statuses,
                created_after=created_after,
                created_before=created_before,
                updated_after=updated_after,
                updated_before=updated_before,
                celery_task_id=celery_task_id,
                include_deleted=include_deleted,
                order=Order.OLDEST if oldest_first else Order.NEWEST,
                limit=limit,
                cursor=cursor,
            )
    except InvalidQuery as exc:  # e.g. a time range whose ends are swapped, a cursor's order
        raise click.UsageError(str(exc)) from None
    if as_json:
        print_json(page.to_dict())
        return
    console = Console()
    console.print(executions_table(page.items, f"{len(page.items)} task execution(s)"))
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", soft_wrap=True)


@executions.command("show")
@click.argument("task_execution_id", metavar="ID", callback=parse_uuid)
@json_option
@database_url_option
@organization_option
def show_execution(
    task_execution_id: uuid.UUID, as_json: bool, database_url: str | None, organization: str | None
) -> None:
    """One task execution with its status history."""
    with open_history(database_url, organization) as history:
        record = history.get_task_execution(task_execution_id)
        changes = history.get_status_history(task_execution_id)
        flower_url = history.settings.flower_url
    if as_json:
        print_json({**record.to_dict(), "status_history": [c.to_dict() for c in changes]})
        return
    details = Table.grid(padding=(0, 2))
    details.add_column(style="bold")
    details.add_column(overflow="fold")
    fields = record.to_dict()
    for name in ("input", "output", "error"):
        fields[name] = json.dumps(fields[name], ensure_ascii=False)
    for name, value in fields.items():
        details.add_row(name, "" if value is None else str(value))
    if flower_url and record.celery_task_id:
        details.add_row("flower", flower_task_url(flower_url, record.celery_task_id))
    history_table = Table(title="status history", title_justify="left")
    for heading in ("at (UTC)", "from", "to", "version", "by"):
        history_table.add_column(heading)
    for change in changes:
        history_table.add_row(
            when(change.recorded_at),
            change.from_status.value if change.from_status else "",
            change.to_status.value,
            str(change.version),
            change.modified_by,
        )
    console = Console()
    console.print(details)
    console.print(history_table)


def flower_task_url(flower_url: str, celery_task_id: str) -> str:
    return f"{flower_url.rstrip('/')}/task/{celery_task_id}"
