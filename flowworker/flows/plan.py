"""Deciding what a flow execution does next, from its ledger alone (no I/O here).

The state of every task is derived from its current (not superseded) dispatches and their
records, in dependency order. A task runs once everything it depends on has completed;
a failed execution with retries left runs again; a task whose upstream failed or was
cancelled is not run: it is recorded `cancelled`, its error naming that upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flowworker.flows.definition import FlowDefinition, TaskSpec
from flowworker.flows.errors import TemplateError
from flowworker.flows.graph import topological_order
from flowworker.flows.templates import Context, render
from persistence.flows import DispatchRow
from persistence.status import ExecutionStatus

TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
_IN_FLIGHT = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class TaskState:
    status: TaskStatus
    output: Any = None
    #: why the task failed or was not run
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Launch:
    """Execute `task` (one loop iteration of it, one attempt) with these keyword arguments."""

    task: TaskSpec
    iteration: int
    attempt: int
    kwargs: dict[str, Any]
    countdown: float = 0.0


@dataclass(frozen=True, slots=True)
class Settle:
    """Record an execution of `task` that never runs, with its final status and error."""

    task: TaskSpec
    status: ExecutionStatus
    error: dict[str, Any]


@dataclass
class Plan:
    launches: list[Launch] = field(default_factory=list)
    settles: list[Settle] = field(default_factory=list)
    states: dict[str, TaskState] = field(default_factory=dict)
    flow_status: ExecutionStatus = ExecutionStatus.RUNNING


def plan_advance(
    definition: FlowDefinition,
    inputs: dict[str, Any],
    rows: Sequence[DispatchRow],
    *,
    cancelled: bool = False,
) -> Plan:
    """What to launch and settle now, each task's state, and the flow execution's status."""
    plan = Plan()
    dependencies = {task.name: task.depends_on for task in definition.tasks}
    for name in topological_order(dependencies):
        task = definition.task(name)
        own = [row for row in rows if row.task_name == name]
        upstream = {d: plan.states[d] for d in task.depends_on}
        context = Context(
            outputs={n: s.output for n, s in plan.states.items() if s.status == "completed"},
            inputs=inputs,
        )
        if own:
            state = _follow(task, own, context, plan, cancelled)
        elif cancelled:
            state = TaskState("pending")
        else:
            state = _start(task, upstream, context, plan)
        plan.states[name] = state
    plan.flow_status = _flow_status(list(plan.states.values()), cancelled)
    return plan


def _start(
    task: TaskSpec, upstream: dict[str, TaskState], context: Context, plan: Plan
) -> TaskState:
    stopped = [(n, s) for n, s in upstream.items() if s.status in ("failed", "cancelled")]
    if stopped:
        name, state = stopped[0]
        verb = "failed" if state.status == "failed" else "was not run or was cancelled"
        reason = f"not run: upstream task {name!r} {verb}"
        plan.settles.append(
            Settle(task, ExecutionStatus.CANCELLED, {"message": reason, "type": "UpstreamFailed"})
        )
        return TaskState("cancelled", reason=reason)
    if any(state.status != "completed" for state in upstream.values()):
        return TaskState("pending")
    try:
        calls = _calls(task, context)
    except TemplateError as exc:
        plan.settles.append(
            Settle(task, ExecutionStatus.FAILED, {"message": str(exc), "type": "TemplateError"})
        )
        return TaskState("failed", reason=str(exc))
    if not calls and task.loop is not None:
        return TaskState("completed", output=[])  # a loop over nothing is done at once
    plan.launches += [Launch(task, n, 0, kwargs) for n, kwargs in enumerate(calls)]
    return TaskState("running")


def _calls(task: TaskSpec, context: Context) -> list[dict[str, Any]]:
    """The keyword arguments of each execution: one, or one per loop item."""
    if task.loop is None:
        return [render(task.input, context)]
    items = render(task.loop, context)
    if not isinstance(items, list):
        raise TemplateError(f"the loop of {task.name!r} is a {type(items).__name__}, not a list")
    return [
        render(task.input, Context(context.outputs, context.inputs, item=item)) for item in items
    ]


def _follow(
    task: TaskSpec, own: list[DispatchRow], context: Context, plan: Plan, cancelled: bool
) -> TaskState:
    latest: dict[int, DispatchRow] = {}
    for row in own:
        if row.iteration not in latest or row.attempt > latest[row.iteration].attempt:
            latest[row.iteration] = row
    running = False
    for iteration, row in sorted(latest.items()):
        if row.status in _IN_FLIGHT:
            running = True
        elif (
            row.status is ExecutionStatus.FAILED
            and row.attempt < task.retry.max_retries
            and not cancelled
            and not _is_template_error(row.error)
        ):
            kwargs = _calls(task, context)[iteration]
            plan.launches.append(
                Launch(task, iteration, row.attempt + 1, kwargs, countdown=task.retry.delay)
            )
            running = True
    rows = [latest[n] for n in sorted(latest)]
    if running:
        return TaskState("running")
    if all(row.status is ExecutionStatus.COMPLETED for row in rows):
        outputs = [row.output for row in rows]
        return TaskState("completed", output=outputs if task.loop is not None else outputs[0])
    failed = [row for row in rows if row.status is ExecutionStatus.FAILED]
    if failed:
        return TaskState("failed", reason=_message(failed[0].error))
    return TaskState("cancelled", reason=_message(rows[0].error))


def _is_template_error(error: Any) -> bool:
    return isinstance(error, dict) and error.get("type") == "TemplateError"


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return "" if error is None else str(error)


def _flow_status(states: list[TaskState], cancelled: bool) -> ExecutionStatus:
    if cancelled:
        return ExecutionStatus.CANCELLED  # whatever still finishes, the run was cancelled
    if all(state.status == "completed" for state in states):
        return ExecutionStatus.COMPLETED
    if any(state.status == "running" for state in states):
        return ExecutionStatus.RUNNING
    if any(state.status == "pending" for state in states):
        return ExecutionStatus.RUNNING
    if any(state.status == "failed" for state in states):
        return ExecutionStatus.FAILED
    return ExecutionStatus.CANCELLED


__all__ = ["Launch", "Plan", "Settle", "TaskState", "plan_advance"]
