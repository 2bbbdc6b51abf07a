"""`flowworker run FLOW.yaml`: start a flow execution and watch it until it ends.

Exit codes: 0 the flow completed; 1 it failed or was cancelled (or an error, e.g. a flow file
with problems, listed with their lines); 2 a usage error, e.g. --input that is not a JSON
object or names inputs the flow does not declare.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from flowworker.cli.executions import database_url_option, organization_option
from flowworker.config import Settings
from flowworker.flows import FlowDefinition, FlowInputError, FlowRunner, load_flow
from flowworker.flows.embedded import EmbeddedWorker, use_memory_broker
from flowworker.flows.progress import follow_flow_execution, outcome_text
from flowworker.flows.worker import register
from flowworker.history import History
from flowworker.install import install
from persistence.database import create_database_engine
from persistence.records import FlowExecutionRecord
from persistence.status import ExecutionStatus

if TYPE_CHECKING:
    from celery import Celery


def prepare_app(
    database_url: str | None, organization: str | None, *, memory_broker: bool = False
) -> tuple[Celery, Settings]:
    """Our tasks app, recording with these settings, its workers driving flows."""
    from tasks.app import app

    if memory_broker or str(app.conf.broker_url).startswith("memory://"):
        use_memory_broker(app)
    app.loader.import_default_modules()
    plugin = install(app, database_url=database_url, organization=organization)
    register(app)
    return app, plugin.settings


def parse_inputs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--input") from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"must be a JSON object such as '{{\"name\": 1}}', not {type(value).__name__}",
            param_hint="--input",
        )
    return value


def watch(
    runner: FlowRunner,
    flow_execution_id: uuid.UUID,
    definition: FlowDefinition,
    console: Console,
    timeout: float | None,
) -> FlowExecutionRecord:
    with History(engine=runner.engine, settings=runner.settings) as history:
        flow = follow_flow_execution(
            history, flow_execution_id, definition, console, timeout=timeout
        )
    console.print(outcome_text(flow))
    return flow


def with_worker_option(function: Any) -> Any:
    return click.option(
        "--with-worker",
        is_flag=True,
        help="Run the tasks in a worker inside this process instead of external workers.",
    )(function)


@click.command()
@click.argument("flow_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "input_json", help="The flow's inputs as a JSON object.")
@with_worker_option
@click.option("--detach", is_flag=True, help="Print the flow execution's id and exit.")
@click.option("--timeout", type=float, help="Stop watching after this many seconds (exit 1).")
@database_url_option
@organization_option
def run(
    flow_file: Path,
    input_json: str | None,
    with_worker: bool,
    detach: bool,
    timeout: float | None,
    database_url: str | None,
    organization: str | None,
) -> None:
    """Run the flow defined in FLOW_FILE and show its progress."""
    inputs = parse_inputs(input_json)
    app, settings = prepare_app(database_url, organization)
    definition = load_flow(flow_file, app.tasks.__contains__)
    engine = create_database_engine(settings.database_url, json_max_bytes=settings.json_max_bytes)
    runner = FlowRunner(app, engine=engine, settings=settings)
    console = Console()
    worker = EmbeddedWorker(app) if with_worker else contextlib.nullcontext()
    with worker:
        try:
            flow_execution_id = runner.run(definition, inputs)
        except FlowInputError as exc:
            raise click.UsageError(str(exc)) from None
        console.print(f"flow execution [bold]{flow_execution_id}[/] of {definition.name}")
        if detach:
            return
        flow = watch(runner, flow_execution_id, definition, console, timeout)
    if flow.status is not ExecutionStatus.COMPLETED:
        sys.exit(1)
