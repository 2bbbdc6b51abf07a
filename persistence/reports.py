"""What a reporter (a worker, the HTTP API) says about one task execution."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field, fields
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
#: the integer columns (idx, attempt) are 32-bit
MAX_INTEGER = 2**31 - 1
#: modified_by is varchar(200); celery_task_id and worker are varchar(255)
MODIFIED_BY_MAX_LENGTH = 200
REFERENCE_MAX_LENGTH = 255


def is_storable_text(value: str) -> bool:
    """Text both databases can hold: no NUL character (PostgreSQL refuses it) and valid
    Unicode (no unpaired surrogate such as the ones undecodable file names produce)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    if not is_storable_text(task_name):
        raise InvalidTaskName(
            f"task_name must be valid Unicode text without NUL characters (got {task_name!r})"
        )
    return task_name


def validate_execution_idx(task_execution_idx: object) -> int:
    if (
        isinstance(task_execution_idx, bool)
        or not isinstance(task_execution_idx, int)
        or not 0 <= task_execution_idx <= MAX_INTEGER
    ):
        raise InvalidExecutionIndex(
            f"task_execution_idx must be an integer from 0 to {MAX_INTEGER} "
            f"(got {task_execution_idx!r})"
        )
    return task_execution_idx


def _validate_text(name: str, value: object, max_length: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise InvalidReport(
            f"{name} must be a string of 1 to {max_length} characters"
            f"{' or null' if optional else ''} (got {value!r:.80})"
        )
    if not is_storable_text(value):
        raise InvalidReport(f"{name} must be valid Unicode text without NUL characters")


#: values that passed validation before (bounded: forgotten wholesale when full)
_TASK_NAMES_SEEN: set[str] = set()
_REFERENCES_SEEN: set[str | None] = {None}
_SEEN_MAX = 4096


def _remember(seen: set[Any], value: Any) -> None:
    if len(seen) >= _SEEN_MAX:
        seen.clear()
        seen.add(None)
    seen.add(value)


@dataclass(frozen=True, slots=True)
class TaskReport:
    """A status report for the execution keyed by (flow execution, task name, idx).

    `None` fields carry no information: they never erase what a record already holds.
    `at` is when the execution reached `status`. A report may also say when it was queued
    and when it started (`queued_at`, `started_at`): the steps it passed through on the
    way, which a writer folded into it instead of writing each one (the record's history
    then shows those steps too; see `steps`).
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
    queued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        # Every worker report passes here on the task's path: the checks take the cheap
        # road for what they saw pass before (task names, host names, the actor recur).
        if type(self.status) is not ExecutionStatus:
            object.__setattr__(self, "status", parse_status(self.status))
        if type(self.task_name) is not str or self.task_name not in _TASK_NAMES_SEEN:
            validate_task_name(self.task_name)
            _remember(_TASK_NAMES_SEEN, self.task_name)
        validate_execution_idx(self.task_execution_idx)
        if not isinstance(self.flow_execution_id, uuid.UUID):
            raise InvalidReport(
                f"flow_execution_id must be a UUID (got {self.flow_execution_id!r})"
            )
        # What the columns cannot hold fails here, with a clear error, instead of failing
        # the whole statement (and every other report of its batch) in the database.
        for name in ("at", "queued_at", "started_at"):
            value = getattr(self, name)
            if (value is not None or name == "at") and (
                not isinstance(value, dt.datetime) or value.utcoffset() is None
            ):
                raise InvalidReport(f"{name} must be a timezone-aware datetime (got {value!r})")
        if self.modified_by is not SYSTEM_ACTOR:
            _validate_text("modified_by", self.modified_by, MODIFIED_BY_MAX_LENGTH, optional=False)
        _validate_text("celery_task_id", self.celery_task_id, REFERENCE_MAX_LENGTH, optional=True)
        if not (
            self.worker is None or (type(self.worker) is str and self.worker in _REFERENCES_SEEN)
        ):
            _validate_text("worker", self.worker, REFERENCE_MAX_LENGTH, optional=True)
            _remember(_REFERENCES_SEEN, self.worker)
        if self.attempt is not None and (
            isinstance(self.attempt, bool)
            or not isinstance(self.attempt, int)
            or not 0 <= self.attempt <= MAX_INTEGER
        ):
            raise InvalidReport(
                f"attempt must be an integer from 0 to {MAX_INTEGER} or null (got {self.attempt!r})"
            )

    @property
    def key(self) -> tuple[uuid.UUID, str, int]:
        return (self.flow_execution_id, self.task_name, self.task_execution_idx)

    @property
    def steps(self) -> tuple[ExecutionStatus, ...]:
        """The statuses this report moves a new record through, oldest first: `queued`
        when it says when the execution was queued, `running` when a finished execution
        says when it started, then `status`."""
        status = self.status
        steps = []
        if self.queued_at is not None and status is not ExecutionStatus.QUEUED:
            steps.append(ExecutionStatus.QUEUED)
        if self.started_at is not None and status.is_terminal:
            steps.append(ExecutionStatus.RUNNING)
        steps.append(status)
        return tuple(steps)

    def absorb(self, earlier: TaskReport) -> TaskReport:
        """This report, carrying what an earlier, unwritten report of the same execution
        knew (when it was queued or started, its input and references): one write then
        does the work of both. (Both were validated when made: no check runs again.)"""
        absorbed = object.__new__(TaskReport)
        for name in _FIELD_NAMES:
            object.__setattr__(absorbed, name, getattr(self, name))
        for name, value in (
            (
                "queued_at",
                self.queued_at
                or (earlier.at if earlier.status is ExecutionStatus.QUEUED else earlier.queued_at),
            ),
            (
                "started_at",
                self.started_at
                or (
                    earlier.at if earlier.status is ExecutionStatus.RUNNING else earlier.started_at
                ),
            ),
            ("input", earlier.input if self.input is None else self.input),
            ("celery_task_id", self.celery_task_id or earlier.celery_task_id),
            ("attempt", earlier.attempt if self.attempt is None else self.attempt),
            ("worker", self.worker or earlier.worker),
        ):
            object.__setattr__(absorbed, name, value)
        return absorbed


_FIELD_NAMES = tuple(field.name for field in fields(TaskReport))


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
    #: when the record says the execution started (after the statement)
    started_at: dt.datetime | None = None

    @property
    def changed(self) -> bool:
        return self.outcome in (UpsertOutcome.CREATED, UpsertOutcome.UPDATED)
