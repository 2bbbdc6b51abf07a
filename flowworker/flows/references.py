"""Checking the templates of a task against the flow: what they name must exist."""

from __future__ import annotations

from typing import Any

from flowworker.flows.errors import TemplateError
from flowworker.flows.templates import iter_templates, parse_reference


def check_templates(
    value: Any,
    *,
    where: str,
    task_name: str,
    allows_item: bool,
    task_names: set[str],
    input_names: set[str],
) -> tuple[list[str], list[str]]:
    """(problems, the tasks whose output `value` uses) for the templates in `value`."""
    problems: list[str] = []
    used: list[str] = []
    for text in iter_templates(value):
        try:
            reference = parse_reference(text)
        except TemplateError as exc:
            problems.append(str(exc))
            continue
        shown = "{{" + text.strip() + "}}"
        if reference.kind == "item" and not allows_item:
            problems.append(
                f"{shown} in {where!r}: only the input of a task with a 'loop' may use item"
            )
        elif reference.kind == "inputs" and reference.name not in input_names:
            problems.append(
                f"template {shown} names input {reference.name!r}, which the flow "
                "does not declare under 'inputs'"
            )
        elif reference.kind == "task" and reference.name not in task_names:
            problems.append(f"template {shown} names no task of this flow ({reference.name!r})")
        elif reference.kind == "task" and reference.name == task_name:
            problems.append(f"task {task_name!r} uses its own output")
        elif reference.kind == "task" and reference.name not in used:
            used.append(str(reference.name))
    return problems, used


__all__ = ["check_templates"]
