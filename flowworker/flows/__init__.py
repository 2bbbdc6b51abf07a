"""Flows: YAML definitions whose tasks pass outputs to each other through templates.

from flowworker.flows import FlowRunner, load_flow
"""

from __future__ import annotations

from flowworker.flows.definition import FlowDefinition, RetryPolicy, TaskSpec
from flowworker.flows.errors import (
    FlowError,
    FlowInputError,
    FlowValidationError,
    FlowVersionConflict,
    Problem,
    RerunRefused,
    TemplateError,
)
from flowworker.flows.loader import load_flow, parse_flow
from flowworker.flows.rerun import RerunOutcome
from flowworker.flows.runner import CancelOutcome, FlowRunner

__all__ = [
    # definitions
    "FlowDefinition",
    "TaskSpec",
    "RetryPolicy",
    "load_flow",
    "parse_flow",
    # running
    "FlowRunner",
    "CancelOutcome",
    "RerunOutcome",
    # errors
    "FlowError",
    "FlowValidationError",
    "Problem",
    "FlowInputError",
    "FlowVersionConflict",
    "RerunRefused",
    "TemplateError",
]
