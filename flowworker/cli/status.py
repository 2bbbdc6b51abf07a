"""`flowworker status`: is the recording path healthy? For a person, or `--json`.

Checks, each on its own so one failure never hides the others: the database (reachable,
schema revision, last write, records running), Redis for notifications, the reports
waiting in this machine's journals (FLOWWORKER_SPOOL_DIR), and the workers (ping, and the
`flowworker_stats` remote-control command: recorded, written, lost, dropped notifications,
per process).

Exit codes: 0 the database is reachable; 1 it is not.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from sqlalchemy import func, select

from flowworker.cli.reap import app_option, database_url_option, load_celery_app
from flowworker.config import Settings
from flowworker.control import COMMAND, count_journaled
from flowworker.journal import SUFFIX as JOURNAL_SUFFIX
from persistence.database import create_database_engine, transaction
from persistence.models import TaskExecution
from persistence.retention import fetch_organization_ids
from persistence.schema import fetch_schema_revision, head_revision
from persistence.status import ExecutionStatus

_te = TaskExecution.__table__


def check_database(settings: Settings) -> dict[str, Any]:
    engine = create_database_engine(
        settings.database_url, pool_size=1, connect_args=_connect_timeout(settings.database_url)
    )
    report: dict[str, Any] = {"url": engine.url.render_as_string(hide_password=True)}
    try:
        revision = fetch_schema_revision(engine)
        last_write: dt.datetime | None = None
        running = 0
        with engine.connect() as connection:
            organization_ids = fetch_organization_ids(connection)
        for organization_id in organization_ids:  # one by one: row-level security
            with transaction(engine, organization_id) as connection:
                latest, count = connection.execute(
                    select(
                        func.max(_te.c.updated_at),
                        func.count().filter(_te.c.status == ExecutionStatus.RUNNING.value),
                    ).where(_te.c.organization_id == organization_id)
                ).one()
            if latest is not None and (last_write is None or latest > last_write):
                last_write = latest
            running += int(count or 0)
        report.update(
            reachable=True,
            schema_revision=revision,
            schema_head=head_revision(engine),
            last_write_at=last_write.isoformat() if last_write else None,
            running=running,
        )
    except Exception as exc:
        report.update(reachable=False, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        engine.dispose()
    return report


def _connect_timeout(url: str) -> dict[str, Any]:
    return {"connect_timeout": 5} if url.startswith(("postgres", "postgresql")) else {}


def check_redis(settings: Settings) -> dict[str, Any]:
    if not settings.redis_url:
        return {"configured": False}
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
        return {"configured": True, "reachable": True}
    except Exception as exc:
        return {"configured": True, "reachable": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()


def check_journals(settings: Settings) -> dict[str, Any]:
    directory = settings.spool_dir
    files = sorted(directory.glob(f"*{JOURNAL_SUFFIX}")) if directory.exists() else []
    return {
        "directory": str(directory),
        "files": len(files),
        "waiting": count_journaled(directory),
    }


def check_workers(app_spec: str, timeout: float) -> dict[str, Any]:
    try:
        app = load_celery_app(app_spec)
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        pings = app.control.ping(timeout=timeout) or []
        replies = app.control.broadcast(COMMAND, reply=True, timeout=timeout) or []
    except Exception as exc:
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    stats = {host: reply for answer in replies for host, reply in answer.items()}
    workers = {}
    for host in sorted({host for answer in pings for host in answer} | set(stats)):
        reply = stats.get(host)
        if not isinstance(reply, dict) or "error" in reply or not reply.get("installed"):
            workers[host] = {"recording": "unknown (no flowworker_stats answer)"}
        else:
            workers[host] = reply
    return {"reachable": True, "workers": workers}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for answers.")
@database_url_option
@app_option
def status(as_json: bool, timeout: float, database_url: str | None, app_spec: str) -> None:
    """Health of the recording path: database, Redis, journals, workers."""
    settings = Settings.load(database_url=database_url)
    document = {
        "database": check_database(settings),
        "redis": check_redis(settings),
        "journal": check_journals(settings),
        "broker": check_workers(app_spec, timeout),
    }
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        _print(document)
    if not document["database"]["reachable"]:
        raise SystemExit(1)


def _print(document: dict[str, Any]) -> None:
    def line(ok: bool | None, text: str) -> None:
        mark = {True: ("ok ", "green"), False: ("BAD", "red"), None: (" - ", "yellow")}[ok]
        click.echo(click.style(mark[0], fg=mark[1]) + "  " + text)

    database = document["database"]
    if database["reachable"]:
        current = database["schema_revision"] == database["schema_head"]
        line(True, f"database {database['url']}")
        line(
            current,
            f"schema revision {database['schema_revision']} (newest {database['schema_head']})",
        )
        line(
            None,
            f"last write {database['last_write_at'] or 'never'}; "
            f"{database['running']} record(s) running",
        )
    else:
        line(False, f"database {database['url']} unreachable: {database['error']}")
    redis = document["redis"]
    if not redis["configured"]:
        line(None, "redis: not configured (no notifications)")
    else:
        line(redis["reachable"], "redis " + ("reachable" if redis["reachable"] else redis["error"]))
    journal = document["journal"]
    line(
        journal["waiting"] == 0,
        f"journal {journal['directory']}: {journal['waiting']} report(s) not yet in the "
        f"database, in {journal['files']} file(s) on this machine",
    )
    broker = document["broker"]
    if not broker["reachable"]:
        line(False, f"broker unreachable: {broker['error']}")
        return
    workers = broker["workers"]
    line(bool(workers), f"{len(workers)} worker(s) answered")
    for host, info in workers.items():
        if "totals" not in info:
            line(None, f"  {host}: {info['recording']}")
            continue
        totals = info["totals"]
        healthy = not totals["journal_lines"] and not totals["rejected"] and not totals["lost"]
        line(
            healthy,
            f"  {host}: {len(info['processes'])} process(es); recorded {totals['recorded']}, "
            f"written {totals['written']} ({totals['journal_lines']} waiting), "
            f"rejected {totals['rejected']}, lost {totals['lost']}, errors {totals['errors']}, "
            f"notifications dropped {totals['notifications_dropped']}"
            + (f"; no figures yet from pids {info['missing']}" if info["missing"] else ""),
        )
