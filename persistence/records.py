"""What the query layer returns: frozen, typed records that serialize to JSON-ready dicts.

Field names are the spec's column names, so the Python API, the CLI's `--json` and the HTTP
API all show the same documents. `to_dict()` turns UUIDs and datetimes into strings (ISO
8601, UTC offset included) and statuses into their values; JSON columns pass through.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persistence.status import ExecutionStatus


def to_json_ready(value: Any) -> Any:
    """`value` with every UUID, datetime, enum and record replaced by its JSON form."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: to_json_ready(getattr(value, field.name))
            for field in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(key): to_json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_ready(item) for item in value]
    return value


class _JsonReady:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """A dict of JSON types only, ready for `json.dumps`."""
        document: dict[str, Any] = to_json_ready(self)
        return document


@dataclass(frozen=True, slots=True)
class TaskExecutionRecord(_JsonReady):
    """One row of `task_executions`, every column, in the spec's names."""

    id: uuid.UUID
    organization_id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int
    status: ExecutionStatus
    input: Any
    output: Any
    error: Any
    modified_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    celery_task_id: str | None
    attempt: int
    worker: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    version: int


@dataclass(frozen=True, slots=True)
class StatusChangeRecord(_JsonReady):
    """One row of the append-only `task_execution_events` history."""

    id: int
    task_execution_id: uuid.UUID
    organization_id: uuid.UUID
    from_status: ExecutionStatus | None
    to_status: ExecutionStatus
    version: int
    modified_by: str
    recorded_at: dt.datetime


@dataclass(frozen=True, slots=True)
class FlowExecutionSummary(_JsonReady):
    """What a person asks first about a flow execution.

    `started_at` is the earliest task start; `finished_at` the latest task finish, and only
    once no task execution is queued or running; `failed_tasks` names the tasks whose latest
    execution (highest `task_execution_idx`) failed, i.e. the ones a retry did not rescue.
    """

    task_execution_count: int
    counts_by_status: Mapping[str, int]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_seconds: float | None
    failed_tasks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlowExecutionRecord(_JsonReady):
    """One row of `flow_executions` with its task executions (in the order they were created)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    flow_id: uuid.UUID | None
    status: ExecutionStatus
    inputs: Any
    celery_root_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    summary: FlowExecutionSummary
    task_executions: tuple[TaskExecutionRecord, ...]


@dataclass(frozen=True, slots=True)
class Page(_JsonReady):
    """One page of a listing; pass `next_cursor` back for the next one (None: last page)."""

    items: tuple[TaskExecutionRecord, ...]
    next_cursor: str | None


_STATUSES = {status.value: status for status in ExecutionStatus}  # cheaper than the Enum call
# A frozen dataclass's __init__ sets each field through `object.__setattr__`; setting the
# slots through their descriptors makes the same record in about two thirds of the time,
# which is a tenth of the CPU of a 50-row page (bench/query.py).
_TASK_EXECUTION_SETTERS = tuple(
    getattr(TaskExecutionRecord, name).__set__ for name in TaskExecutionRecord.__dataclass_fields__
)
_STATUS_POSITION = list(TaskExecutionRecord.__dataclass_fields__).index("status")
_set_status = _TASK_EXECUTION_SETTERS[_STATUS_POSITION]


def task_execution_record(row: Sequence[Any]) -> TaskExecutionRecord:
    """The record of a row of every `task_executions` column in field order, status as text.

    Equal in every way to `TaskExecutionRecord(*row)` with the status converted (the class
    has no `__post_init__` to skip; tests/persistence/test_queries.py checks both).
    """
    record: TaskExecutionRecord = object.__new__(TaskExecutionRecord)
    # the statements select exactly these columns; strict=True would cost a sixth more
    for set_field, value in zip(_TASK_EXECUTION_SETTERS, row, strict=False):
        set_field(record, value)
    _set_status(record, _STATUSES[row[_STATUS_POSITION]])
    return record


_UNFINISHED = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.RUNNING})


def summarize(tasks: tuple[TaskExecutionRecord, ...]) -> FlowExecutionSummary:
    counts: dict[str, int] = {}
    latest: dict[str, TaskExecutionRecord] = {}
    for task in tasks:
        counts[task.status.value] = counts.get(task.status.value, 0) + 1
        current = latest.get(task.task_name)
        if current is None or task.task_execution_idx > current.task_execution_idx:
            latest[task.task_name] = task
    starts = [task.started_at for task in tasks if task.started_at is not None]
    finishes = [task.finished_at for task in tasks if task.finished_at is not None]
    started_at = min(starts, default=None)
    unfinished = any(task.status in _UNFINISHED for task in tasks)
    finished_at = None if unfinished else max(finishes, default=None)
    duration = (
        (finished_at - started_at).total_seconds()
        if started_at is not None and finished_at is not None
        else None
    )
    return FlowExecutionSummary(
        task_execution_count=len(tasks),
        counts_by_status=dict(sorted(counts.items())),
        started_at=started_at,
        finished_at=finished_at,
        duration_seconds=duration,
        failed_tasks=tuple(
            sorted(name for name, task in latest.items() if task.status is ExecutionStatus.FAILED)
        ),
    )
