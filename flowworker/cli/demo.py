"""`flowworker demo`: the first thing a new user runs.

With no settings it needs no servers: SQLite (`FLOWWORKER_DATABASE_URL`, default
`sqlite:///flowworker.db` in the current directory), an in-process broker (`memory://`) and
a worker in a thread of this process. With `CELERY_BROKER_URL` set it uses that broker and
the workers listening on it (or a worker of its own when none answers), and with
`FLOWWORKER_DATABASE_URL` / `FLOWWORKER_REDIS_URL` PostgreSQL and Redis notifications.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from flowworker.cli.run import prepare_app, watch
from flowworker.flows import FlowRunner, load_flow
from flowworker.flows.embedded import EmbeddedWorker
from flowworker.flows.progress import attempts_table
from flowworker.history import History
from persistence.database import create_database_engine
from persistence.schema import upgrade_database
from persistence.status import ExecutionStatus

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Engine

DEMO_FLOW = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
OUTPUT_FILE = "flowworker-demo-output.json"


@click.command()
@click.option(
    "--flow",
    "flow_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEMO_FLOW,
    show_default="examples/demo.yaml",
    help="Run this flow instead of the bundled demo.",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the flow.")
def demo(flow_file: Path, timeout: float) -> None:
    """Run an example flow (parallel branch, loop, a retried failure) and show its history."""
    embedded = not os.environ.get("CELERY_BROKER_URL")
    app, settings = prepare_app(None, None, memory_broker=embedded)
    engine = create_database_engine(settings.database_url, json_max_bytes=settings.json_max_bytes)
    upgrade_database(engine)
    definition = load_flow(flow_file, app.tasks.__contains__)
    console = Console()
    worker = _choose_worker(app, embedded, console)
    console.print(f"database: {_where(engine)}")
    runner = FlowRunner(app, engine=engine, settings=settings)
    output = Path.cwd() / OUTPUT_FILE
    inputs = {"output_path": str(output)} if "output_path" in definition.inputs else {}
    with worker:
        flow_execution_id = runner.run(definition, inputs)
        console.print(f"flow execution [bold]{flow_execution_id}[/] of {definition.name}")
        flow = watch(runner, flow_execution_id, definition, console, timeout)
    with History(engine=engine, settings=settings) as history:
        flow = history.get_flow_execution(flow_execution_id)
    console.print(attempts_table(flow, "recorded history: one row per execution"))
    console.print("where the data lives:")
    console.print(f"  records   {_where(engine)} (tables task_executions, task_execution_events)")
    if output.exists():
        console.print(f"  output    {output}")
    console.print(f"  explore   flowworker flow-executions show {flow_execution_id}")
    console.print(f"            flowworker executions list --flow-execution {flow_execution_id}")
    if flow.status is not ExecutionStatus.COMPLETED:
        sys.exit(1)


def _choose_worker(app: Celery, embedded: bool, console: Console) -> Any:
    if embedded:
        console.print("broker: in-process (memory://); worker: in this process (threads)")
        return EmbeddedWorker(app)
    broker = app.connection().as_uri()
    queue = app.conf.task_default_queue
    # any worker on the broker answers a ping; only those consuming our queue will run the flow
    active = app.control.inspect(timeout=1.0).active_queues() or {}
    names = [name for name, queues in active.items() if any(q["name"] == queue for q in queues)]
    if names:
        console.print(f"broker: {broker}; workers on queue {queue!r}: {', '.join(names)}")
        return contextlib.nullcontext()
    console.print(f"broker: {broker}; no worker consumes {queue!r}, starting one in this process")
    return EmbeddedWorker(app)


def _where(engine: Engine) -> str:
    if engine.dialect.name == "sqlite" and engine.url.database:
        return f"SQLite file {Path(engine.url.database).resolve()}"
    return engine.url.render_as_string(hide_password=True)
