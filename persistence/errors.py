"""Exceptions, one root for the whole product.

    FlowworkerError
     +-- InvalidReport                  bad input, nothing written      (HTTP 400 / 422)
     |    +-- InvalidStatus
     |    +-- InvalidTaskName
     |    +-- InvalidExecutionIndex
     |    +-- TaskNotInFlow
     |    +-- InvalidQuery              a filter, limit or id that cannot be queried
     |         +-- InvalidCursor        a pagination cursor that is malformed or mismatched
     +-- NotFound                       the named thing does not exist  (HTTP 404)
     |    +-- UnknownFlowExecution
     |    +-- UnknownTaskExecution
     |    +-- UnknownOrganization
     +-- TransitionRefused              the state rules say no          (HTTP 409)
     +-- ConfigurationError             settings that cannot work

Messages say what was wrong and, where it helps, what to do instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from persistence.status import ExecutionStatus


class FlowworkerError(Exception):
    """Base of every error flowworker raises on purpose."""


class ConfigurationError(FlowworkerError):
    pass


class InvalidReport(FlowworkerError):
    pass


class InvalidStatus(InvalidReport):
    pass


class InvalidTaskName(InvalidReport):
    pass


class InvalidExecutionIndex(InvalidReport):
    pass


class TaskNotInFlow(InvalidReport):
    pass


class InvalidQuery(InvalidReport):
    pass


class InvalidCursor(InvalidQuery):
    pass


class NotFound(FlowworkerError):
    pass


class UnknownFlowExecution(NotFound):
    pass


class UnknownTaskExecution(NotFound):
    pass


class UnknownOrganization(NotFound):
    pass


class TransitionRefused(FlowworkerError):
    def __init__(self, current: ExecutionStatus, requested: ExecutionStatus) -> None:
        self.current = current
        self.requested = requested
        super().__init__(
            f"cannot move a task execution from {current!s} to {requested!s}; "
            f"its current status is {current!s}"
        )
