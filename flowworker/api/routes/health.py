"""`/health` for load balancers, and the bare endpoint the HTTP benchmark compares with."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from flowworker.api.auth import Caller
from flowworker.api.errors import error_responses
from flowworker.api.schemas import Health, TaskExecutionCreate
from flowworker.api.state import ApiState, api_state

router = APIRouter(tags=["health"])
State = Annotated[ApiState, Depends(api_state)]


@router.get("/health", response_model=Health, responses=error_responses(500, 503))
def check_health(state: State) -> dict[str, Any]:
    """Up, and the database answers (503 when it does not). Needs no API key."""
    with state.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


bare_router = APIRouter()


@bare_router.post("/_bench/bare", status_code=201, include_in_schema=False)
async def accept_without_database(body: TaskExecutionCreate, caller: Caller) -> JSONResponse:
    """Everything `POST /task-executions` does on PostgreSQL (auth, validation, a JSON answer,
    all in the event loop) except the database: the benchmark's baseline. Mounted only
    when asked for."""
    document = body.model_dump(mode="json")
    document["organization_id"] = str(caller.organization_id)
    document["modified_by"] = caller.principal
    return JSONResponse(document, status_code=201)
