"""flowworker: record every Celery task execution of a workflow into SQL.

Record (one line in your Celery app)::

    import flowworker
    flowworker.install(app)

Query and watch::

    history = flowworker.History()
    page = history.list_task_executions(statuses=["failed"])
    for change in flowworker.subscribe(redis_url, organization_id):
        ...
"""

from __future__ import annotations

from flowworker.config import Settings
from flowworker.history import History
from flowworker.install import install, uninstall
from flowworker.notification import Notification
from flowworker.subscribe import Subscription, subscribe
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
    # querying and watching
    "History",
    "subscribe",
    "Subscription",
    "Notification",
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
