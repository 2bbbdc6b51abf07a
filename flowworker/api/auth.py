"""Who is calling: the API key of a request, verified against `api_keys`.

A key goes in `Authorization: Bearer <key>` (a WebSocket may pass `?api_key=<key>` instead,
since browsers cannot set headers on one). Verified keys are remembered for a few seconds
so that a busy worker does not pay a database round trip per request; a revoked key
therefore stops working within `cache_seconds` (default 5) on every server process.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from flowworker.api.errors import Unauthenticated
from persistence.api_keys import ApiKeyRecord, fetch_api_key
from persistence.database import transaction

_CACHE_MAX_ENTRIES = 10_000


class KeyVerifier:
    """Checks presented keys, remembering good ones for `cache_seconds`."""

    def __init__(self, engine: Engine, cache_seconds: float = 5.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[ApiKeyRecord, float]] = {}
        self._lock = threading.Lock()

    def fetch_cached(self, presented: str) -> ApiKeyRecord | None:
        entry = self._cache.get(_cache_key(presented))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def fetch_verified(self, presented: str) -> ApiKeyRecord | None:
        """The key's record from the database (and remembered), or None if it is not valid."""
        with transaction(self._engine) as connection:
            record = fetch_api_key(connection, presented)
        if record is not None and self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= _CACHE_MAX_ENTRIES:
                    self._cache.clear()
                self._cache[_cache_key(presented)] = (
                    record,
                    time.monotonic() + self._cache_seconds,
                )
        return record


def _cache_key(presented: str) -> bytes:
    # keyed by digest, so the process never holds plaintext keys longer than a request
    return hashlib.sha256(presented.encode("utf-8", "replace")).digest()


def presented_key(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        # `Bearer <key>`, or the bare key as the spec's plain `Authorization` header
        return value.strip() if scheme.lower() == "bearer" else header.strip()
    if connection.scope["type"] == "websocket":
        # query strings end up in access logs: accepted only where headers are impossible
        return connection.query_params.get("api_key")
    return None


async def authenticate_connection(connection: HTTPConnection) -> ApiKeyRecord:
    verifier: KeyVerifier = connection.app.state.flowworker.key_verifier
    presented = presented_key(connection)
    if not presented:
        raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>'")
    record = verifier.fetch_cached(presented)
    if record is None:
        record = await run_in_threadpool(verifier.fetch_verified, presented)
    if record is None:
        raise Unauthenticated("the API key is not valid (unknown, malformed or revoked)")
    return record


# declared for the OpenAPI document; the key itself is read by `authenticate_connection`
_bearer = HTTPBearer(auto_error=False, description="An API key from `flowworker keys create`.")


async def authenticate(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKeyRecord:
    return await authenticate_connection(request)


Caller = Annotated[ApiKeyRecord, Depends(authenticate)]
