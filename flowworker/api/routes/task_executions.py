"""`/task-executions`: report (POST), list, read, update (PUT)."""

from __future__ import annotations

import uuid
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Connection, Engine

from flowworker.api.auth import Caller
from flowworker.api.errors import error_responses
from flowworker.api.reexecute import reexecute_flow_from_task
from flowworker.api.responses import record_response
from flowworker.api.schemas import (
    QueryTime,
    TaskExecution,
    TaskExecutionCreate,
    TaskExecutionPage,
    TaskExecutionUpdate,
    TaskName,
)
from flowworker.api.state import ApiState, api_state
from persistence.database import autocommit, transaction
from persistence.errors import (
    InvalidCursor,
    InvalidQuery,
    InvalidReport,
    TransitionRefused,
    UnknownTaskExecution,
)
from persistence.queries import (
    MAX_LIMIT,
    Order,
    TaskExecutionFilter,
    fetch_flow_execution,
    fetch_task_attempts,
    fetch_task_execution,
    fetch_task_executions,
)
from persistence.records import TaskExecutionRecord
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_execution_record

router = APIRouter(tags=["task executions"])
State = Annotated[ApiState, Depends(api_state)]


def _write_report(
    connection: Connection, caller_org: uuid.UUID, report: TaskReport
) -> tuple[UpsertResult, TaskExecutionRecord]:
    """Apply `report`; the result, and the record as the upsert's RETURNING left it.

    The store writes it only into the caller's organization (row-level security, and a
    check of the flow execution's organization for roles it does not bind): another
    organization's flow execution is `UnknownFlowExecution`, with nothing written."""
    result, record = upsert_task_execution_record(connection, report, organization_id=caller_org)
    if result.outcome is UpsertOutcome.REFUSED:
        raise TransitionRefused(result.status, report.status)
    return result, record


@router.post(
    "/task-executions",
    status_code=201,
    response_model=TaskExecution,
    summary="Create a task execution record",
    responses={
        200: {"model": TaskExecution, "description": "Repeated report: the same record"},
        201: {"description": "Task execution created successfully"},
        **error_responses(400, 401, 404, 409, 500),
    },
)
async def create_task_execution(
    body: TaskExecutionCreate, caller: Caller, state: State
) -> Response:
    """Report a task execution's status; idempotent on (flow_execution_id, task_name,
    task_execution_idx): a repeat updates that record and answers 200 with the same `id`.
    """
    report = TaskReport(
        flow_execution_id=body.flow_execution_id,
        task_name=body.task_name,
        task_execution_idx=body.task_execution_idx,
        status=body.status,
        input=body.input,
        output=body.output,
        error=body.error,
        modified_by=caller.principal,
    )
    if state.report_writer is not None:
        # PostgreSQL: one round trip, awaited in the event loop
        result, record = await state.report_writer.upsert_task_execution_record(
            report, caller.organization_id
        )
    else:
        result, record = await anyio.to_thread.run_sync(
            _write_new_report,
            state.engine,
            caller.organization_id,
            report,
            limiter=state.write_threads,
        )
    if result.outcome is UpsertOutcome.REFUSED:
        raise TransitionRefused(result.status, report.status)
    state.publish_changes([result])
    status_code = 201 if result.outcome is UpsertOutcome.CREATED else 200
    return record_response(record, status_code)


def _write_new_report(
    engine: Engine, caller_org: uuid.UUID, report: TaskReport
) -> tuple[UpsertResult, TaskExecutionRecord]:
    # one statement, its own transaction: one round trip (`persistence.upsert_function`)
    with autocommit(engine) as connection:
        return upsert_task_execution_record(connection, report, organization_id=caller_org)


def _query_error(loc: tuple[str, ...], value: object, exc: Exception) -> RequestValidationError:
    """The query layer's own refusals, reported like FastAPI's (422 with `detail`)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", *loc), "msg": str(exc), "input": value}]
    )


@router.get(
    "/task-executions",
    response_model=TaskExecutionPage,
    summary="List task executions with filtering",
    responses=error_responses(400, 401, 500),
)
def list_task_executions(
    caller: Caller,
    state: State,
    flow_execution_id: uuid.UUID | None = None,
    task_name: Annotated[TaskName | None, Query()] = None,
    status: Annotated[list[ExecutionStatus] | None, Query(description="Any of these.")] = None,
    created_after: QueryTime | None = None,
    created_before: QueryTime | None = None,
    updated_after: QueryTime | None = None,
    updated_before: QueryTime | None = None,
    celery_task_id: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]+$")] = None,
    include_deleted: bool = False,
    order: Order = Order.NEWEST,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> JSONResponse:
    """Newest first by default; pass `next_cursor` back as `cursor` for the next page."""
    try:
        query = TaskExecutionFilter(
            flow_execution_id=flow_execution_id,
            task_name=task_name,
            statuses=frozenset(status or ()),
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
            celery_task_id=celery_task_id,
            include_deleted=include_deleted,
            order=order,
        )
    except InvalidQuery as exc:
        raise _query_error((), None, exc) from None
    with transaction(state.engine, caller.organization_id) as connection:
        try:
            page = fetch_task_executions(
                connection, caller.organization_id, query, limit=limit, cursor=cursor
            )
        except InvalidCursor as exc:
            raise _query_error(("cursor",), cursor, exc) from None
    return JSONResponse(page.to_dict())


@router.get(
    "/task-executions/{task_execution_id}",
    response_model=TaskExecution,
    summary="Read one task execution",
    responses=error_responses(401, 404, 500),
)
def read_task_execution(task_execution_id: uuid.UUID, caller: Caller, state: State) -> Response:
    """The record, whatever its status (soft-deleted ones too)."""
    with transaction(state.engine, caller.organization_id) as connection:
        record = fetch_task_execution(connection, caller.organization_id, task_execution_id)
    return record_response(record)


def _fetch_named(
    connection: Connection, caller_org: uuid.UUID, body: TaskExecutionUpdate
) -> TaskExecutionRecord:
    if body.id is not None:
        record = fetch_task_execution(connection, caller_org, body.id)
        named = (body.flow_execution_id, body.task_name, body.task_execution_idx)
        actual = (record.flow_execution_id, record.task_name, record.task_execution_idx)
        if any(
            given is not None and given != real for given, real in zip(named, actual, strict=True)
        ):
            raise InvalidReport(
                f"task execution {body.id} is {actual[1]!r} #{actual[2]} of flow execution "
                f"{actual[0]}, not the one the key fields name"
            )
        return record
    assert body.flow_execution_id is not None
    assert body.task_name is not None
    attempts = fetch_task_attempts(
        connection, caller_org, body.flow_execution_id, body.task_name, include_deleted=True
    )
    for record in attempts:
        if record.task_execution_idx == body.task_execution_idx:
            return record
    raise UnknownTaskExecution(
        f"no task execution {body.task_name!r} #{body.task_execution_idx} in flow execution "
        f"{body.flow_execution_id} of this organization"
    )


@router.put(
    "/task-executions",
    response_model=TaskExecution,
    summary="Update a task execution and optionally re-execute the flow from it",
    responses=error_responses(400, 401, 404, 409, 500, 501),
)
def update_task_execution(body: TaskExecutionUpdate, caller: Caller, state: State) -> Response:
    """Move a record to `status` (`deleted` soft-deletes it) as the key's principal, who
    becomes `modified_by`; a move the state rules refuse answers 409 with the current status.
    """
    results: list[UpsertResult] = []
    with transaction(state.engine, caller.organization_id) as connection:
        record = _fetch_named(connection, caller.organization_id, body)
        if body.status is not None:
            report = TaskReport(
                flow_execution_id=record.flow_execution_id,
                task_name=record.task_name,
                task_execution_idx=record.task_execution_idx,
                status=body.status,
                input=body.input,
                output=body.output,
                error=body.error,
                modified_by=caller.principal,
            )
            result, record = _write_report(connection, caller.organization_id, report)
            results.append(result)
        if body.re_execute:
            flow_execution = fetch_flow_execution(
                connection, caller.organization_id, record.flow_execution_id
            )
            results += reexecute_flow_from_task(
                connection, flow_execution, record, caller.principal
            )
            record = fetch_task_execution(connection, caller.organization_id, record.id)
    state.publish_changes(results)
    return record_response(record)
