"""Every request gets an id: the caller's `X-Request-ID` when it is sane, else a new one.

The id is echoed in the `X-Request-ID` response header of every response (errors included)
and in every error body, so a client's report can be matched with the server's log.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
# a caller-chosen id ends up in logs: printable ASCII, bounded
_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_of(connection: HTTPConnection) -> str | None:
    """The id `RequestIdMiddleware` gave this request (None outside it)."""
    value = connection.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == _HEADER_KEY:
                candidate = value.decode("latin-1")
                request_id = candidate if _SANE.fullmatch(candidate) else None
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = MutableHeaders(scope=message)
                if HEADER not in headers:
                    headers[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
