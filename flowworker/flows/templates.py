"""`{{task.output}}` templates: parsing references and rendering them against outputs.

A reference is `TASK.output` followed by a path (`extract.output.rows.0`), `inputs.NAME`
(with a path), or `item` (the loop item, with a path). A string that is one template and
nothing else becomes the referenced value itself (a list stays a list); a template inside a
longer string is formatted into it (`"rows: {{count.output}}"`), JSON for lists and objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flowworker.flows.errors import TemplateError

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_TASK_OUTPUT = re.compile(r"^(?P<task>.+?)\.output(?P<path>(\.[^.]+)*)$")

Kind = Literal["task", "inputs", "item"]


@dataclass(frozen=True, slots=True)
class Reference:
    kind: Kind
    #: the task name (kind "task") or the input name (kind "inputs")
    name: str | None
    path: tuple[str, ...]
    text: str


def parse_reference(text: str) -> Reference:
    expression = text.strip()
    if not expression:
        raise TemplateError("empty template '{{}}'")
    if expression == "item" or expression.startswith("item."):
        return Reference("item", None, tuple(expression.split(".")[1:]), expression)
    if expression.startswith("inputs."):
        name, *path = expression.split(".")[1:]
        if not name:
            raise TemplateError(f"template '{{{{{expression}}}}}' names no input")
        return Reference("inputs", name, tuple(path), expression)
    match = _TASK_OUTPUT.match(expression)
    if match is None:
        raise TemplateError(
            f"template '{{{{{expression}}}}}' is not TASK.output[.path], inputs.NAME or item"
        )
    steps = tuple(part for part in match["path"].split(".") if part)
    return Reference("task", match["task"], steps, expression)


def iter_templates(value: Any) -> Iterator[str]:
    """The text inside every `{{...}}` of a JSON-like value (keys and values)."""
    if isinstance(value, str):
        for match in _TEMPLATE.finditer(value):
            yield match[1]
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_templates(key)
            yield from iter_templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_templates(item)


def referenced_tasks(value: Any) -> set[str]:
    """Names of the tasks whose output `value` uses (unparseable templates are skipped)."""
    names: set[str] = set()
    for text in iter_templates(value):
        try:
            reference = parse_reference(text)
        except TemplateError:
            continue
        if reference.kind == "task" and reference.name is not None:
            names.add(reference.name)
    return names


_NO_ITEM = object()


@dataclass(frozen=True, slots=True)
class Context:
    """What templates may see: finished tasks' outputs, the flow's inputs, the loop item."""

    outputs: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    item: Any = _NO_ITEM


def render(value: Any, context: Context) -> Any:
    """`value` with every template replaced; `TemplateError` says which one failed and why."""
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value.strip()) if value.strip().count("{{") == 1 else None
        if whole is not None:
            return resolve(parse_reference(whole[1]), context)
        return _TEMPLATE.sub(lambda m: _as_text(resolve(parse_reference(m[1]), context)), value)
    if isinstance(value, Mapping):
        return {render(key, context): render(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, context) for item in value]
    return value


def resolve(reference: Reference, context: Context) -> Any:
    if reference.kind == "item":
        if context.item is _NO_ITEM:
            raise TemplateError("'{{item}}' is only defined in a task that has a loop")
        current = context.item
    elif reference.kind == "inputs":
        if reference.name is None or reference.name not in context.inputs:
            raise TemplateError(
                f"'{{{{{reference.text}}}}}': the flow has no input {reference.name!r}"
            )
        current = context.inputs[reference.name]
    else:
        if reference.name is None or reference.name not in context.outputs:
            raise TemplateError(
                f"'{{{{{reference.text}}}}}': task {reference.name!r} has no output yet"
            )
        current = context.outputs[reference.name]
    walked: list[str] = []
    for step in reference.path:
        current = _step(current, step, reference, walked)
        walked.append(step)
    return current


def _step(current: Any, step: str, reference: Reference, walked: list[str]) -> Any:
    where = ".".join([reference.text.split(".")[0], *walked]) if walked else "the value"
    if isinstance(current, Mapping):
        if step in current:
            return current[step]
        keys = ", ".join(sorted(map(str, current))[:10])
        raise TemplateError(
            f"'{{{{{reference.text}}}}}': {where} has no key {step!r} (keys: {keys})"
        )
    if isinstance(current, list):
        try:
            return current[int(step)]
        except (ValueError, IndexError):
            raise TemplateError(
                f"'{{{{{reference.text}}}}}': {step!r} is not an index of a list of "
                f"{len(current)} item(s)"
            ) from None
    raise TemplateError(
        f"'{{{{{reference.text}}}}}': cannot take {step!r} of a {type(current).__name__}"
    )


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


__all__ = [
    "Context",
    "Reference",
    "iter_templates",
    "parse_reference",
    "referenced_tasks",
    "render",
]
