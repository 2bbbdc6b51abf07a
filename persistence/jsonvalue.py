"""Turning arbitrary task arguments and results into JSON the database accepts.

Recording must never fail because a task returned something odd, so:

* a value JSON cannot express is stored as ``{"$unserializable": "<module.Type>", "repr": "..."}``
  (datetimes, UUIDs, decimals, sets and bytes get a natural JSON form first);
* NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
* NUL characters, which PostgreSQL's JSONB refuses, become U+FFFD;
* a document larger than the size cap is stored as
  ``{"$truncated": true, "size_bytes": N, "preview": "<first 1,000 characters>"}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_BYTES = 1024 * 1024
PREVIEW_CHARS = 1000
_REPR_CHARS = 500


def encode_json(value: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Serialize `value` for storage; never raises."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), default=_fallback)
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(to_json_safe(value), separators=(",", ":"), default=_fallback)
    if "\\u0000" in text:
        text = json.dumps(to_json_safe(json.loads(text)), separators=(",", ":"))
    if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
        text = json.dumps(
            {"$truncated": True, "size_bytes": len(text.encode()), "preview": text[:PREVIEW_CHARS]},
            separators=(",", ":"),
        )
    return text


def to_json_safe(value: Any, _depth: int = 0) -> Any:
    """A structure with only JSON types, for values `json.dumps` alone cannot take."""
    if _depth > 100:
        return _unserializable(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, Mapping):
        return {
            to_json_safe(str(key), _depth + 1): to_json_safe(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_safe(item, _depth + 1) for item in value]
    converted = _fallback(value)
    return to_json_safe(converted, _depth + 1) if converted is not value else converted


def _fallback(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    return _unserializable(value)


def _unserializable(value: Any) -> dict[str, str]:
    kind = type(value)
    try:
        text = repr(value)
    except Exception:
        text = "<repr failed>"
    return {"$unserializable": f"{kind.__module__}.{kind.__qualname__}", "repr": text[:_REPR_CHARS]}
