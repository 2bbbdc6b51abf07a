"""`/ws`: a WebSocket relaying the status notifications of the caller's organization.

    ws://host/ws?flow_execution_id=<uuid>&since=<iso time>     (both optional)

The filter comes first: the key (header, or `?api_key=`) fixes the organization, and
`flow_execution_id`, when given, must be one of its flow executions. The server then
subscribes and sends `{"type": "subscribed", ...}`: every change committed after that
message arrives. With `since`, the records changed since then are sent first
(`"catch_up": true`), then live messages. Each message is the JSON of
`flowworker.notification.Notification`; keep the highest `version` per `id`.

Refusals happen before the handshake completes, as an HTTP answer with the usual error
body: 401 (no valid key), 404 (unknown flow execution), 422 (bad parameter), 503 (no Redis
configured). A Redis outage later is survived: the subscription reconnects and catches up.
"""

from __future__ import annotations

import datetime as dt
import uuid

import anyio
from fastapi import APIRouter, WebSocket
from pydantic import AwareDatetime, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from flowworker.api.auth import authenticate_connection
from flowworker.api.errors import Unauthenticated, error_response
from flowworker.api.state import ApiState
from flowworker.subscribe import Subscription
from persistence.database import transaction
from persistence.errors import NotFound
from persistence.queries import fetch_flow_execution

router = APIRouter()

_RECEIVE_TIMEOUT = 1.0  # seconds a thread waits on Redis before looking at the client again
_aware_datetime = TypeAdapter(AwareDatetime)


async def _refuse(websocket: WebSocket, status_code: int, code: str, message: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(websocket, status_code, code, message))
    else:
        await websocket.close(code=4000 + status_code, reason=message[:120])


def _check_flow_execution(
    state: ApiState, organization_id: uuid.UUID, flow_execution_id: uuid.UUID
) -> None:
    with transaction(state.engine, organization_id) as connection:
        fetch_flow_execution(connection, organization_id, flow_execution_id)


@router.websocket("/ws")
async def stream_notifications(websocket: WebSocket) -> None:
    state: ApiState = websocket.app.state.flowworker
    try:
        caller = await authenticate_connection(websocket)
    except Unauthenticated as exc:
        await _refuse(websocket, 401, "unauthenticated", str(exc))
        return
    params = websocket.query_params
    try:
        flow_execution_id = (
            uuid.UUID(params["flow_execution_id"]) if params.get("flow_execution_id") else None
        )
        since: dt.datetime | None = (
            _aware_datetime.validate_python(params["since"]) if params.get("since") else None
        )
    except (ValueError, ValidationError):
        message = "flow_execution_id must be a UUID and since an ISO 8601 time with a UTC offset"
        await _refuse(websocket, 422, "invalid_request", message)
        return
    if state.settings.redis_url is None:
        await _refuse(websocket, 503, "notifications_off", "no redis_url is configured")
        return
    if flow_execution_id is not None:
        try:
            await run_in_threadpool(
                _check_flow_execution, state, caller.organization_id, flow_execution_id
            )
        except NotFound as exc:
            await _refuse(websocket, 404, "not_found", str(exc))
            return
    redis_url = state.settings.redis_url
    subscription = await anyio.to_thread.run_sync(
        lambda: Subscription(
            redis_url,
            caller.organization_id,
            flow_execution_id,
            engine=state.engine,
            channel_prefix=state.settings.channel_prefix,
            catch_up_since=since,
        ),
        limiter=state.stream_threads,
    )
    try:
        await websocket.accept()
        await websocket.send_json(
            {
                "type": "subscribed",
                "organization_id": str(caller.organization_id),
                "flow_execution_id": str(flow_execution_id) if flow_execution_id else None,
            }
        )
        async with anyio.create_task_group() as group:
            group.start_soon(_close_when_client_leaves, websocket, group.cancel_scope)
            await _relay(websocket, subscription, state, caller.organization_id)
    except WebSocketDisconnect:
        pass
    finally:
        await anyio.to_thread.run_sync(subscription.close, limiter=state.stream_threads)


async def _relay(
    websocket: WebSocket, subscription: Subscription, state: ApiState, organization_id: uuid.UUID
) -> None:
    while True:
        notification = await anyio.to_thread.run_sync(
            subscription.receive, _RECEIVE_TIMEOUT, limiter=state.stream_threads
        )
        # the channel is the organization's already; checked again because it is cheap
        if notification is not None and notification.organization_id == organization_id:
            await websocket.send_text(notification.to_json())


async def _close_when_client_leaves(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Messages from the client are not part of the protocol; reading them notices a close."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        scope.cancel()
