"""Transforming lists of records (dicts): pick and rename fields, filter, format.

Filters are small expressions, never `eval`: ``age >= 18``, ``city == "Paris"``,
``tags contains "vip"``, ``status in ["new", "open"]``, joined with ``and``. The value on the
right is JSON when it parses as JSON, else a bare string.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from typing import Any

from tasks.app import app

_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|>|<|not in|in|contains)\s*(.+?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "in": lambda left, right: left in right,
    "not in": lambda left, right: left not in right,
    "contains": lambda left, right: right in left,
}


def parse_filter(expression: str) -> list[tuple[str, Callable[[Any, Any], bool], Any]]:
    """`expression` as (field, comparison, value) conditions, all of which must hold."""
    conditions = []
    for part in re.split(r"\s+and\s+", expression.strip()):
        match = _CONDITION.match(part)
        if match is None:
            raise ValueError(
                f"cannot read the condition {part!r}; write FIELD OP VALUE with OP one of "
                f"{', '.join(_OPERATORS)} (e.g. age >= 18)"
            )
        field, op, raw = match.groups()
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        conditions.append((field, _OPERATORS[op], value))
    return conditions


def _lookup(record: Any, field: str) -> Any:
    for step in field.split("."):
        if not isinstance(record, dict) or step not in record:
            return None
        record = record[step]
    return record


def _holds(record: Any, field: str, compare: Callable[[Any, Any], bool], value: Any) -> bool:
    found = _lookup(record, field)
    if isinstance(found, str) and isinstance(value, int | float) and not isinstance(value, bool):
        try:  # CSV cells are text: compare "36" >= 18 as numbers
            found = float(found)
        except ValueError:
            return False
    try:
        return bool(compare(found, value))
    except TypeError:  # None >= 18, "a" > 1: the record does not match
        return False


@app.task(name="tasks.filter_records")
def filter_records(records: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """The records for which every condition of `where` holds."""
    conditions = parse_filter(where)
    return [r for r in records if all(_holds(r, f, c, v) for f, c, v in conditions)]


@app.task(name="tasks.select_fields")
def select_fields(
    records: list[dict[str, Any]], fields: list[str], rename: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Each record with only `fields` (missing ones are None), renamed per `rename`."""
    rename = rename or {}
    return [{rename.get(f, f): _lookup(record, f) for f in fields} for record in records]


@app.task(name="tasks.format_text")
def format_text(template: str, values: dict[str, Any]) -> str:
    """`template` with `{name}` fields filled from `values` (str.format_map, no attributes)."""
    if re.search(r"\{[^}]*[.\[]", template):
        raise ValueError("format fields may name keys only, not attributes or indexes")
    return template.format_map(values)


@app.task(name="tasks.count")
def count(items: list[Any]) -> int:
    return len(items)


@app.task(name="tasks.echo")
def echo(value: Any) -> Any:
    """Returns `value`: puts a literal or a flow input into the flow as a task output."""
    return value
