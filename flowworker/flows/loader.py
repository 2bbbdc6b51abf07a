"""Loading a flow file: YAML in, a `FlowDefinition` out, or every problem with its line.

The YAML is composed into nodes first (PyYAML's `compose`), so that each problem can name
the line it is on; values are then built from the nodes with the safe constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from flowworker.flows.definition import FlowDefinition, RetryPolicy, TaskSpec
from flowworker.flows.errors import FlowValidationError, Problem
from flowworker.flows.graph import find_cycle
from flowworker.flows.references import check_templates
from flowworker.flows.templates import iter_templates
from persistence.models import TASK_NAME_MAX_LENGTH

_TOP_LEVEL = {"name", "version", "description", "inputs", "tasks"}
_TASK_KEYS = {"name", "task", "input", "depends_on", "retry", "loop"}
_RETRY_KEYS = {"max_retries", "delay"}
MAX_RETRIES = 100

#: tells whether a Celery task name is registered (None: do not check)
IsRegistered = Callable[[str], bool]


def load_flow(path: str | Path, is_registered: IsRegistered | None = None) -> FlowDefinition:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowValidationError(str(path), [Problem(0, f"cannot read the file: {exc}")]) from None
    return parse_flow(text, str(path), is_registered)


def parse_flow(
    text: str, source: str = "<flow>", is_registered: IsRegistered | None = None
) -> FlowDefinition:
    """The flow `text` defines; `FlowValidationError` lists everything wrong with it."""
    problems: list[Problem] = []
    root = _compose(text, problems)
    if root is None:
        if not problems:
            problems.append(Problem(1, "the file is empty; a flow needs a name, version and tasks"))
        raise FlowValidationError(source, problems)
    flow = _Reader(problems, is_registered).read_flow(root)
    if problems or flow is None:
        raise FlowValidationError(source, problems)
    return flow


def _compose(text: str, problems: list[Problem]) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(mark.line + 1 if mark else 0, f"not valid YAML: {exc}"))
        return None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _value(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_document(node)


class _Reader:
    def __init__(self, problems: list[Problem], is_registered: IsRegistered | None) -> None:
        self.problems = problems
        self.is_registered = is_registered

    def add(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else _line(node)
        self.problems.append(Problem(line, message))

    def fields(
        self, node: yaml.Node, what: str, allowed: set[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.add(node, f"{what} must be a mapping")
            return None
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = _value(key_node)
            if not isinstance(key, str) or key not in allowed:
                self.add(
                    key_node,
                    f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})",
                )
            elif key in found:
                self.add(key_node, f"{what} has the key {key!r} twice")
            else:
                found[key] = (key_node, value_node)
        return found

    def read_flow(self, root: yaml.Node) -> FlowDefinition | None:
        top = self.fields(root, "the flow", _TOP_LEVEL)
        if top is None:
            return None
        name = self.text(top, "name", root, "the flow")
        version_field = top.get("version")
        version = "" if version_field is None else _value(version_field[1])
        if version_field is None:
            self.add(root, "the flow has no 'version'")
        elif not isinstance(version, str | int | float) or not 1 <= len(str(version)) <= 50:
            self.add(version_field[1], "'version' must be a string of 1 to 50 characters")
        description = _value(top["description"][1]) if "description" in top else ""
        inputs: dict[str, Any] = {}
        if "inputs" in top:
            value_node = top["inputs"][1]
            if isinstance(value_node, yaml.MappingNode):
                inputs = _value(value_node) or {}
            elif _value(value_node) is not None:
                self.add(
                    value_node, "'inputs' must map each input name to its default (null: required)"
                )
        tasks = self.read_tasks(top, root, set(inputs))
        if name is None or not tasks:
            return None
        return FlowDefinition(name, str(version), tuple(tasks), inputs, str(description or ""))

    def text(
        self, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, owner: yaml.Node, what: str
    ) -> str | None:
        if key not in fields:
            self.add(owner, f"{what} has no {key!r}")
            return None
        value = _value(fields[key][1])
        if not isinstance(value, str) or not 1 <= len(value) <= TASK_NAME_MAX_LENGTH:
            length = len(value) if isinstance(value, str) else type(value).__name__
            self.add(
                fields[key][1],
                f"{what}'s {key!r} must be a string of 1 to {TASK_NAME_MAX_LENGTH} characters "
                f"(got {length})",
            )
            return None
        return value

    def read_tasks(
        self, top: dict[str, tuple[yaml.Node, yaml.Node]], root: yaml.Node, input_names: set[str]
    ) -> list[TaskSpec]:
        if "tasks" not in top:
            self.add(root, "the flow has no 'tasks'")
            return []
        tasks_node = top["tasks"][1]
        if not isinstance(tasks_node, yaml.SequenceNode) or not tasks_node.value:
            self.add(tasks_node, "'tasks' must be a non-empty list of tasks")
            return []
        drafts: list[tuple[TaskSpec, dict[str, tuple[yaml.Node, yaml.Node]]]] = []
        seen: dict[str, int] = {}
        for position, node in enumerate(tasks_node.value, start=1):
            fields = self.fields(node, f"task #{position}", _TASK_KEYS)
            if fields is None:
                continue
            draft = self.read_task(node, fields, position)
            if draft is None:
                continue
            if draft.name in seen:
                self.add(
                    fields["name"][1],
                    f"duplicate task name {draft.name!r} (first on line {seen[draft.name]})",
                )
                continue
            seen[draft.name] = _line(node)
            drafts.append((draft, fields))
        names = set(seen)
        tasks = [self.link(draft, fields, names, input_names) for draft, fields in drafts]
        dependencies = {task.name: task.depends_on for task in tasks}
        if cycle := find_cycle(dependencies):
            self.add(seen[cycle[0]], "dependency cycle: " + " -> ".join(cycle))
        return tasks

    def read_task(
        self, node: yaml.Node, fields: dict[str, tuple[yaml.Node, yaml.Node]], position: int
    ) -> TaskSpec | None:
        name = self.text(fields, "name", node, f"task #{position}")
        celery_name = self.text(fields, "task", node, f"task #{position}")
        if celery_name is not None and self.is_registered and not self.is_registered(celery_name):
            self.add(fields["task"][1], f"Celery task {celery_name!r} is not registered in the app")
        task_input: Any = {}
        if "input" in fields:
            task_input = _value(fields["input"][1])
            if task_input is None:
                task_input = {}
            elif not isinstance(task_input, dict):
                self.add(fields["input"][1], "'input' must be a mapping of keyword arguments")
                task_input = {}
        retry = self.read_retry(fields["retry"][1]) if "retry" in fields else RetryPolicy()
        loop = _value(fields["loop"][1]) if "loop" in fields else None
        if loop is not None and not _is_list_or_template(loop):
            self.add(
                fields["loop"][1],
                "'loop' must be a list or one template such as '{{extract.output.rows}}'",
            )
            loop = None
        if name is None or celery_name is None:
            return None
        return TaskSpec(name, celery_name, task_input, (), retry, loop, _line(node))

    def read_retry(self, node: yaml.Node) -> RetryPolicy:
        fields = self.fields(node, "'retry'", _RETRY_KEYS)
        if fields is None:
            return RetryPolicy()
        max_retries, delay = 0, 0.0
        if "max_retries" in fields:
            value = _value(fields["max_retries"][1])
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= MAX_RETRIES
            ):
                self.add(
                    fields["max_retries"][1],
                    f"'max_retries' must be a whole number from 0 to {MAX_RETRIES}",
                )
            else:
                max_retries = value
        if "delay" in fields:
            value = _value(fields["delay"][1])
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= 86400
            ):
                self.add(fields["delay"][1], "'delay' must be a number of seconds from 0 to 86400")
            else:
                delay = float(value)
        return RetryPolicy(max_retries, delay)

    def link(
        self,
        task: TaskSpec,
        fields: dict[str, tuple[yaml.Node, yaml.Node]],
        names: set[str],
        input_names: set[str],
    ) -> TaskSpec:
        """Check references to other tasks and inputs; add the dependencies templates imply."""
        depends_on: list[str] = []
        if "depends_on" in fields:
            node = fields["depends_on"][1]
            value = _value(node)
            listed = [value] if isinstance(value, str) else value
            if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
                self.add(node, "'depends_on' must be a task name or a list of task names")
                listed = []
            for upstream in listed:
                if upstream not in names:
                    self.add(node, f"task {task.name!r} depends on unknown task {upstream!r}")
                elif upstream not in depends_on:
                    depends_on.append(upstream)
        for key, allows_item in (("input", task.loop is not None), ("loop", False)):
            if key not in fields:
                continue
            node = fields[key][1]
            problems, used = check_templates(
                _value(node),
                where=key,
                task_name=task.name,
                allows_item=allows_item,
                task_names=names,
                input_names=input_names,
            )
            for problem in problems:
                self.add(node, problem)
            depends_on += [name for name in used if name not in depends_on]
        return TaskSpec(
            task.name, task.task, task.input, tuple(depends_on), task.retry, task.loop, task.line
        )


def _is_list_or_template(loop: Any) -> bool:
    if isinstance(loop, list):
        return True
    stripped = loop.strip() if isinstance(loop, str) else ""
    return (
        len(list(iter_templates(stripped))) == 1
        and stripped.startswith("{{")
        and stripped.endswith("}}")
    )


__all__ = ["load_flow", "parse_flow"]
