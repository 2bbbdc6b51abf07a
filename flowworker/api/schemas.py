"""Request and response bodies, field by field as the spec's "Create a task execution record"
page gives them, plus the columns operators need (Celery task id, attempt, worker, times).

Bodies refuse unknown fields, so a misspelt one is an error instead of silently ignored.
Strings refuse NUL characters and unpaired surrogates: neither fits a PostgreSQL text column,
and the error should be the client's 422, not a failed insert.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from persistence.models import TASK_NAME_MAX_LENGTH
from persistence.status import REPORTABLE_STATUSES, ExecutionStatus

#: PostgreSQL `integer`: a larger index would fail in the database instead of here.
MAX_EXECUTION_IDX = 2**31 - 1


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


def _storable_json(value: Any, _depth: int = 0) -> Any:
    """Refuse unpaired surrogates anywhere in a JSON value (NUL is made storable later)."""
    if _depth > 200:
        raise ValueError("is nested more than 200 levels deep")
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable_json(key, _depth + 1)
            _storable_json(item, _depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, _depth + 1)
    return value


def _reportable(status: ExecutionStatus) -> ExecutionStatus:
    if status not in REPORTABLE_STATUSES:
        valid = ", ".join(s.value for s in ExecutionStatus if s in REPORTABLE_STATUSES)
        raise ValueError(f"a report's status is one of {valid}")
    return status


TaskName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=TASK_NAME_MAX_LENGTH,
        pattern=r"^[^\x00]+$",
        description="Name of the task as defined in the flow definition; case-sensitive.",
        examples=["extract"],
    ),
    AfterValidator(_storable_text),
]
ExecutionIdx = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=MAX_EXECUTION_IDX,
        description="Zero-based execution index: 0 first execution, then retries and loops.",
    ),
]
JsonValue = Annotated[Any, AfterValidator(_storable_json)]
ReportableStatus = Annotated[
    ExecutionStatus,
    AfterValidator(_reportable),
    WithJsonSchema(
        {
            "type": "string",
            "enum": [s.value for s in ExecutionStatus if s in REPORTABLE_STATUSES],
            "description": "queued, running, then completed, failed or cancelled.",
        }
    ),
]


def _iso_time(value: Any) -> Any:
    # pydantic would read `0.5` as a Unix time; the documented format is ISO 8601
    if not isinstance(value, str) or not re.match(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be an ISO 8601 date-time with a UTC offset, e.g. 2026-01-31T12:00Z")
    return value


#: A query-string time: ISO 8601 with an offset (a naive time would be ambiguous).
QueryTime = Annotated[AwareDatetime, BeforeValidator(_iso_time)]


class TaskExecutionCreate(BaseModel):
    """`POST /task-executions`: idempotent on (flow_execution_id, task_name, task_execution_idx)."""

    model_config = ConfigDict(extra="forbid")

    flow_execution_id: uuid.UUID = Field(description="The parent flow execution.")
    task_name: TaskName
    task_execution_idx: ExecutionIdx
    status: ReportableStatus
    input: JsonValue = Field(None, description="Input of the task; any JSON value.")
    output: JsonValue = Field(None, description="Output, set when the status is completed.")
    error: JsonValue = Field(
        None, description="Error, set when failed: {'message', 'type', 'traceback'}."
    )


class TaskExecutionUpdate(BaseModel):
    """`PUT /task-executions`: names a record by `id` or by its three key fields."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["id"], "properties": {"id": {"type": "string", "format": "uuid"}}},
                {
                    "required": ["flow_execution_id", "task_name", "task_execution_idx"],
                    "properties": {
                        "flow_execution_id": {"type": "string", "format": "uuid"},
                        "task_name": {"type": "string"},
                        "task_execution_idx": {"type": "integer"},
                    },
                },
            ]
        },
    )

    id: uuid.UUID | None = None
    flow_execution_id: uuid.UUID | None = None
    task_name: TaskName | None = None
    task_execution_idx: ExecutionIdx | None = None
    status: ExecutionStatus | None = Field(
        None,
        description="The status to move to (`deleted` soft-deletes); the state rules apply. "
        "Without it, input/output/error are not changed either.",
    )
    input: JsonValue = None
    output: JsonValue = None
    error: JsonValue = None
    re_execute: bool = Field(
        False, description="Re-execute the flow from this task (flows with a definition only)."
    )

    @model_validator(mode="after")
    def _names_one_record(self) -> TaskExecutionUpdate:
        key = (self.flow_execution_id, self.task_name, self.task_execution_idx)
        if self.id is None and None in key:
            raise ValueError(
                "name the task execution by id, or by flow_execution_id, task_name and "
                "task_execution_idx together"
            )
        return self


class TaskExecution(BaseModel):
    """A task execution record: the spec's response attributes, then operator columns."""

    id: uuid.UUID
    organization_id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int
    status: ExecutionStatus
    input: Any = None
    output: Any = None
    error: Any = None
    modified_by: str = Field(
        description="'system' (workers), a user id (a person), or an integration name."
    )
    created_at: dt.datetime
    updated_at: dt.datetime
    celery_task_id: str | None
    attempt: int
    worker: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    version: int = Field(description="Grows by one with every accepted change.")


class TaskExecutionPage(BaseModel):
    items: list[TaskExecution]
    next_cursor: str | None = Field(description="Pass back as `cursor`; null on the last page.")


class FlowExecutionSummary(BaseModel):
    task_execution_count: int
    counts_by_status: dict[str, int]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_seconds: float | None
    failed_tasks: list[str]


class FlowExecution(BaseModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    flow_id: uuid.UUID | None
    status: ExecutionStatus
    inputs: Any = None
    celery_root_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    summary: FlowExecutionSummary
    task_executions: list[TaskExecution]


class ErrorDetail(BaseModel):
    """Standard error detail structure."""

    code: str = Field(description="Stable, machine-readable: not_found, transition_refused, ...")
    message: str = Field(description="What was wrong, for a person.")
    details: Any = Field(None, description="More about it, when there is more.")


class ErrorBody(BaseModel):
    error: ErrorDetail
    request_id: str | None


class Health(BaseModel):
    status: str
    database: str
