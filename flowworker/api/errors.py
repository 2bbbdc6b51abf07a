"""Every error leaves as `{"error": {"code", "message", "details"}, "request_id"}` (the spec's
standard error detail structure), except 422, which keeps FastAPI's `{"detail": [...]}`.

Status codes: 400 a missing required field or an invalid status; 401 no valid API key;
404 an unknown resource (or one of another organization); 409 a move the state rules refuse,
naming the current status; 422 any other validation error; 503 the database is unreachable;
500 only for our own bugs, never for bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from flowworker.api.request_id import HEADER, request_id_of
from flowworker.api.schemas import ErrorBody
from persistence.errors import (
    FlowworkerError,
    InvalidReport,
    InvalidStatus,
    NotFound,
    TransitionRefused,
)
from persistence.status import REPORTABLE_STATUSES, ExecutionStatus

logger = logging.getLogger(__name__)


class Unauthenticated(FlowworkerError):
    """No API key, or one that is unknown, malformed or revoked."""


class ReexecutionRefused(FlowworkerError):
    """Re-execution asked for where it cannot happen (an ad-hoc Celery workflow)."""


class ReexecutionUnavailable(FlowworkerError):
    """Re-executing flows is not available in this version."""


# most specific first: the first class in an error's MRO found here decides
_STATUS_CODES: dict[type[BaseException], tuple[int, str]] = {
    Unauthenticated: (401, "unauthenticated"),
    InvalidStatus: (400, "invalid_status"),
    InvalidReport: (422, "invalid_request"),
    NotFound: (404, "not_found"),
    TransitionRefused: (409, "transition_refused"),
    ReexecutionRefused: (409, "reexecution_refused"),
    ReexecutionUnavailable: (501, "not_implemented"),
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    request: HTTPConnection,
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request)
    body = {
        "error": {"code": code, "message": message, "details": details},
        "request_id": request_id,
    }
    # set here too: a 500 leaves through Starlette's outermost middleware, past ours
    all_headers = {**(headers or {}), **({HEADER: request_id} if request_id else {})}
    return JSONResponse(body, status_code=status_code, headers=all_headers)


def _printable(value: Any) -> Any:
    """`value` as JSON that can be encoded: unpaired surrogates become U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_printable(str(key)): _printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _printable(str(value))


def _clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    cleaned = []
    for error in errors:
        item = {
            "type": error["type"],
            "loc": [part if isinstance(part, int) else str(part) for part in error["loc"]],
            "msg": _printable(error["msg"]),
            "input": _printable(error.get("input")),
        }
        if error.get("ctx"):
            item["ctx"] = _printable(error["ctx"])
        cleaned.append(item)
    return cleaned


def _bad_request_message(errors: list[dict[str, Any]]) -> str | None:
    """The spec's 400s: a missing required field, or an invalid status."""
    missing = [".".join(map(str, e["loc"][1:])) for e in errors if e["type"] == "missing"]
    if missing == [""]:
        return "a JSON request body is required"
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    if any(e["loc"][:2] == ["body", "status"] for e in errors):
        valid = ", ".join(s.value for s in ExecutionStatus if s in REPORTABLE_STATUSES)
        return f"invalid status; valid values are: {valid}"
    return None


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_errors(exc.errors())
    message = _bad_request_message(errors)
    if message is not None:
        return error_response(request, 400, "bad_request", message, errors)
    return JSONResponse({"detail": errors}, status_code=422)


async def _on_flowworker_error(request: Request, exc: Exception) -> JSONResponse:
    for cls in type(exc).__mro__:
        if cls in _STATUS_CODES:
            status_code, code = _STATUS_CODES[cls]
            break
    else:
        logger.error("unexpected flowworker error", exc_info=exc)
        return error_response(request, 500, "internal_error", "an unexpected error occurred")
    details: Any = None
    headers = None
    if isinstance(exc, TransitionRefused):
        details = {"current_status": exc.current.value, "requested_status": exc.requested.value}
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(request, status_code, code, str(exc), details, headers)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(
        request, exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
    )


async def _on_database_unreachable(request: Request, exc: Exception) -> JSONResponse:
    logger.error("database unreachable", exc_info=exc)
    return error_response(
        request, 503, "database_unavailable", "the database cannot be reached; retry later"
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "internal_error", "an unexpected error occurred")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(FlowworkerError, _on_flowworker_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(OperationalError, _on_database_unreachable)
    try:
        import psycopg
    except ImportError:  # SQLite only
        pass
    else:
        # statements run on psycopg's own cursor (`persistence.compiled`, `set_organization`)
        # raise its errors as they are, not wrapped by SQLAlchemy
        app.add_exception_handler(psycopg.OperationalError, _on_database_unreachable)
    app.add_exception_handler(Exception, _on_unexpected)


#: `responses=` for the routes, so the OpenAPI names every status a route can answer.
def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad Request - Invalid status value or missing required fields",
        401: "Unauthorized - No valid API key",
        404: "Not Found - The requested resource does not exist",
        409: "Conflict - The state rules refuse this transition; names the current status",
        500: "Internal Server Error - An unexpected error occurred",
        501: "Not Implemented",
        503: "Service Unavailable - The database cannot be reached",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in status_codes}
