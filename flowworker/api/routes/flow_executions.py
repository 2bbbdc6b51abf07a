"""`/flow-executions/{id}`: a flow execution with its task executions and a summary."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from flowworker.api.auth import Caller
from flowworker.api.errors import error_responses
from flowworker.api.schemas import FlowExecution
from flowworker.api.state import ApiState, api_state
from persistence.database import transaction
from persistence.queries import fetch_flow_execution

router = APIRouter(tags=["flow executions"])


@router.get(
    "/flow-executions/{flow_execution_id}",
    response_model=FlowExecution,
    summary="View a flow execution with its tasks",
    responses=error_responses(401, 404, 500),
)
def read_flow_execution(
    flow_execution_id: uuid.UUID,
    caller: Caller,
    state: Annotated[ApiState, Depends(api_state)],
    include_deleted: bool = False,
) -> JSONResponse:
    with transaction(state.engine, caller.organization_id) as connection:
        record = fetch_flow_execution(
            connection, caller.organization_id, flow_execution_id, include_deleted=include_deleted
        )
    return JSONResponse(record.to_dict())
