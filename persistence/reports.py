"""What a reporter (a worker, the HTTP API) says about one task execution."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from persistence.errors import (
    InvalidExecutionIndex,
    InvalidReport,
    InvalidStatus,
    InvalidTaskName,
)
from persistence.models import TASK_NAME_MAX_LENGTH
from persistence.status import ExecutionStatus

SYSTEM_ACTOR = "system"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_status(value: str | ExecutionStatus) -> ExecutionStatus:
    try:
        return ExecutionStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in ExecutionStatus)
        raise InvalidStatus(f"invalid status {value!r}; valid values are: {valid}") from None


def validate_task_name(task_name: object) -> str:
    if not isinstance(task_name, str) or not 1 <= len(task_name) <= TASK_NAME_MAX_LENGTH:
        length = len(task_name) if isinstance(task_name, str) else "not a string"
        raise InvalidTaskName(
            f"task_name must be a string of 1 to {TASK_NAME_MAX_LENGTH} characters "
            f"(got length {length})"
        )
    return task_name


def validate_execution_idx(task_execution_idx: object) -> int:
    if (
        isinstance(task_execution_idx, bool)
        or not isinstance(task_execution_idx, int)
        or task_execution_idx < 0
    ):
        raise InvalidExecutionIndex(
            f"task_execution_idx must be an integer >= 0 (got {task_execution_idx!r})"
        )
    return task_execution_idx


@dataclass(frozen=True, slots=True)
class TaskReport:
    """A status report for the execution keyed by (flow execution, task name, idx).

    `None` fields carry no information: they never erase what a record already holds.
    """

    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int
    status: ExecutionStatus
    at: dt.datetime = field(default_factory=utcnow)
    input: Any = None
    output: Any = None
    error: Any = None
    modified_by: str = SYSTEM_ACTOR
    celery_task_id: str | None = None
    attempt: int | None = None
    worker: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", parse_status(self.status))
        validate_task_name(self.task_name)
        validate_execution_idx(self.task_execution_idx)
        if not isinstance(self.flow_execution_id, uuid.UUID):
            raise InvalidReport(
                f"flow_execution_id must be a UUID (got {self.flow_execution_id!r})"
            )

    @property
    def key(self) -> tuple[uuid.UUID, str, int]:
        return (self.flow_execution_id, self.task_name, self.task_execution_idx)


class UpsertOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What became of one report. `status` is the record's status after the statement."""

    outcome: UpsertOutcome
    report: TaskReport
    task_execution_id: uuid.UUID
    organization_id: uuid.UUID
    status: ExecutionStatus
    version: int
    attempt: int
    updated_at: dt.datetime

    @property
    def changed(self) -> bool:
        return self.outcome in (UpsertOutcome.CREATED, UpsertOutcome.UPDATED)
