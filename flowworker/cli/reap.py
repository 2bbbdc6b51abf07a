"""`flowworker reap`: mark `failed` the runs that a dead worker left `running`.

Exit codes: 0 done (also when nothing was stale); 1 the database or the broker could not
be reached (nothing is reaped when the workers cannot be asked).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import sys
from typing import TYPE_CHECKING

import click

from flowworker.config import Settings
from persistence.database import create_database_engine

if TYPE_CHECKING:
    from celery import Celery

_AGE = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

database_url_option = click.option(
    "--database-url",
    envvar="FLOWWORKER_DATABASE_URL",
    help="Database URL (default: $FLOWWORKER_DATABASE_URL, else sqlite:///flowworker.db).",
)
app_option = click.option(
    "-A",
    "--app",
    "app_spec",
    default="tasks.app:app",
    show_default=True,
    envvar="FLOWWORKER_CELERY_APP",
    help="The Celery app whose workers to ask, as module:attribute.",
)


def parse_age(_ctx: click.Context, param: click.Parameter, value: str) -> dt.timedelta:
    """An age such as 90s, 10m, 2h, 30d."""
    match = _AGE.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not an age; write a number and a unit: 90s, 10m, 2h, 30d", param=param
        )
    amount, unit = match.groups()
    return dt.timedelta(**{_UNITS[unit]: int(amount)})


def load_celery_app(spec: str) -> Celery:
    """The Celery app named `module:attribute` (or `module`, meaning `module:app`)."""
    module_name, _, attribute = spec.partition(":")
    # like `celery -A`: modules of the current directory can be named
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        app: Celery = getattr(module, attribute or "app")
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load the Celery app {spec!r}: {exc}") from exc
    return app


@click.command()
@click.option(
    "--older-than",
    default="10m",
    show_default=True,
    callback=parse_age,
    help="Only records running for longer than this (90s, 10m, 2h).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be reaped; change nothing.")
@click.option(
    "--inspect-timeout",
    default=2.0,
    show_default=True,
    help="Seconds to wait for the workers' answers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@database_url_option
@app_option
def reap(
    older_than: dt.timedelta,
    dry_run: bool,
    inspect_timeout: float,
    as_json: bool,
    database_url: str | None,
    app_spec: str,
) -> None:
    """Mark failed the records left running by workers that died.

    A record is reaped only when it has been running for longer than --older-than and its
    worker does not answer, or answers but no longer has the task. A live task is never
    reaped; a record that finished meanwhile is left as it is.
    """
    from flowworker.reaper import reap_stale_runs

    settings = Settings.load(database_url=database_url)
    engine = create_database_engine(settings.database_url, pool_size=1)
    try:
        report = reap_stale_runs(
            engine,
            load_celery_app(app_spec),
            older_than,
            dry_run=dry_run,
            inspect_timeout=inspect_timeout,
            settings=settings,
        )
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would reap" if dry_run else "reaped"
    click.echo(
        f"{report.examined} record(s) running for more than {older_than}; "
        f"{report.spared} still run on a live worker; {verb} {len(report.reaped)}"
        + (f"; {len(report.refused)} finished meanwhile" if report.refused else "")
    )
    for run in report.reaped:
        record = run.record
        click.echo(
            f"  {record.id}  {record.task_name}[{record.task_execution_idx}]  "
            f"celery id {record.celery_task_id}: {run.reason}"
        )
