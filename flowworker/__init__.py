"""flowworker: record every Celery task execution of a workflow into SQL.

import flowworker
flowworker.install(app)
"""

from __future__ import annotations

from flowworker.config import Settings
from flowworker.install import install, uninstall
from persistence.errors import (
    ConfigurationError,
    FlowworkerError,
    InvalidExecutionIndex,
    InvalidReport,
    InvalidStatus,
    InvalidTaskName,
    NotFound,
    TaskNotInFlow,
    TransitionRefused,
    UnknownFlowExecution,
    UnknownOrganization,
    UnknownTaskExecution,
)
from persistence.status import ExecutionStatus

__all__ = [
    # setup
    "install",
    "uninstall",
    "Settings",
    # records
    "ExecutionStatus",
    # exceptions
    "FlowworkerError",
    "ConfigurationError",
    "InvalidReport",
    "InvalidStatus",
    "InvalidTaskName",
    "InvalidExecutionIndex",
    "TaskNotInFlow",
    "NotFound",
    "UnknownFlowExecution",
    "UnknownTaskExecution",
    "UnknownOrganization",
    "TransitionRefused",
]
