"""A flow execution's inputs: the flow's declared defaults, overridden by what was given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowworker.flows.definition import FlowDefinition
from flowworker.flows.errors import FlowInputError


def resolve_inputs(definition: FlowDefinition, given: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(given or {})
    unknown = sorted(set(given) - set(definition.inputs))
    if unknown:
        declared = ", ".join(sorted(definition.inputs)) or "none"
        raise FlowInputError(
            f"flow {definition.name!r} has no input(s) {', '.join(map(repr, unknown))} "
            f"(declared: {declared})"
        )
    resolved = {**definition.inputs, **given}
    missing = sorted(name for name, value in resolved.items() if value is None)
    if missing:
        raise FlowInputError(
            f"flow {definition.name!r} needs input(s) {', '.join(map(repr, missing))}; "
            "pass them with --input '{\"name\": value}'"
        )
    return resolved


__all__ = ["resolve_inputs"]
