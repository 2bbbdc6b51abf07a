"""Showing a flow execution to people: live progress while it runs, its attempts after.

The display reads the database (the truth) a few times a second; it only watches. The flow
itself is driven by the workers as tasks finish, whether anyone watches or not.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from flowworker.flows.definition import FlowDefinition
from flowworker.history import History
from persistence.records import FlowExecutionRecord, TaskExecutionRecord
from persistence.status import ExecutionStatus

_IN_FLIGHT = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
_HIDDEN = (ExecutionStatus.STALE, ExecutionStatus.DELETED)
_COLOURS = {
    ExecutionStatus.COMPLETED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.CANCELLED: "yellow",
    ExecutionStatus.RUNNING: "cyan",
    ExecutionStatus.QUEUED: "blue",
    ExecutionStatus.STALE: "dim",
}


def count_finished_tasks(definition: FlowDefinition, flow: FlowExecutionRecord) -> int:
    """Tasks of the flow with at least one current execution and none queued or running."""
    finished = 0
    for name in definition.task_names:
        current = [
            t for t in flow.task_executions if t.task_name == name and t.status not in _HIDDEN
        ]
        if current and not any(t.status in _IN_FLIGHT for t in current):
            finished += 1
    return finished


def follow_flow_execution(
    history: History,
    flow_execution_id: uuid.UUID,
    definition: FlowDefinition,
    console: Console,
    *,
    poll_seconds: float = 0.2,
    timeout: float | None = None,
) -> FlowExecutionRecord:
    """Show a bar and the running tasks until the flow execution ends (or `timeout`)."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task(f"{definition.name} v{definition.version}", total=len(definition.tasks))
    deadline = None if timeout is None else time.monotonic() + timeout
    with Live(progress, console=console, refresh_per_second=10) as live:
        while True:
            flow = history.get_flow_execution(flow_execution_id)
            progress.update(bar, completed=count_finished_tasks(definition, flow))
            running = [t for t in flow.task_executions if t.status in _IN_FLIGHT]
            live.update(Group(progress, _running_text(running)))
            if flow.status.is_terminal and not running:
                return flow
            if deadline is not None and time.monotonic() > deadline:
                return flow
            time.sleep(poll_seconds)


def _running_text(running: list[TaskExecutionRecord]) -> Text:
    if not running:
        return Text("")
    parts = [f"{t.task_name}[{t.task_execution_idx}] {t.status.value}" for t in running[:8]]
    more = f" (+{len(running) - 8} more)" if len(running) > 8 else ""
    return Text("  now: " + ", ".join(parts) + more, style="cyan")


def outcome_text(flow: FlowExecutionRecord) -> Text:
    seconds = flow.summary.duration_seconds
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    text = Text(f"flow execution {flow.id} ")
    text.append(flow.status.value, style=f"bold {_COLOURS.get(flow.status, '')}")
    text.append(took)
    if flow.summary.failed_tasks:
        text.append(f" (failed: {', '.join(flow.summary.failed_tasks)})", style="red")
    return text


def attempts_table(flow: FlowExecutionRecord, title: str = "recorded task executions") -> Table:
    """One row per execution: each retry, loop iteration and re-execution is its own row."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    # On a narrow terminal the output column gives way; the short ones keep their width.
    longest_name = max((len(r.task_name) for r in flow.task_executions), default=4)
    for heading, justify, width in (
        ("task", "left", min(max(longest_name, 4), 30)),
        ("idx", "right", 3),
        ("attempt", "right", 7),
        ("status", "left", 9),
        ("seconds", "right", 7),
    ):
        table.add_column(heading, justify=justify, no_wrap=True, width=width)  # type: ignore[arg-type]
    table.add_column("output / error", overflow="fold", max_width=60)
    for record in flow.task_executions:
        seconds = (
            f"{(record.finished_at - record.started_at).total_seconds():.2f}"
            if record.finished_at and record.started_at
            else ""
        )
        table.add_row(
            record.task_name,
            str(record.task_execution_idx),
            str(record.attempt),
            Text(record.status.value, style=_COLOURS.get(record.status, "")),
            seconds,
            _detail(record),
        )
    return table


def _detail(record: TaskExecutionRecord) -> str:
    if isinstance(record.error, dict):
        return _short(f"{record.error.get('type', 'error')}: {record.error.get('message', '')}")
    return _short(record.output)


def _short(value: Any, width: int = 60) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = ["attempts_table", "count_finished_tasks", "follow_flow_execution", "outcome_text"]
