"""Turning arbitrary task arguments and results into JSON the database accepts.

Recording must never fail because a task returned something odd, so:

* a value JSON cannot express is stored as ``{"$unserializable": "<module.Type>", "repr": "..."}``
  (datetimes, UUIDs, decimals, sets and bytes get a natural JSON form first);
* NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
* NUL characters and unpaired UTF-16 surrogates (``"\\ud800"``, from undecodable file
  names), which PostgreSQL's JSONB refuses, become U+FFFD;
* an integer too long for Python to print (over 4,300 digits by default) is stored as
  ``{"$unserializable": "builtins.int", "repr": "<int of N bits>"}``;
* a document larger than the size cap is stored as
  ``{"$truncated": true, "size_bytes": N, "preview": "<first 1,000 characters>"}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_BYTES = 1024 * 1024
PREVIEW_CHARS = 1000
_REPR_CHARS = 500

# In json.dumps output (ASCII, surrogates escaped): a high surrogate not followed by a low
# one, or a low one not preceded by a high one. (An escaped backslash before "ud800" can
# match too; that only sends the value through the careful path for nothing.)
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})"
    r"|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)
_SURROGATE_OR_NUL = re.compile("[\x00\ud800-\udfff]")


def encode_json(value: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Serialize `value` for storage; never raises."""
    try:
        text = _encode(value)
    except Exception:  # the last resort: recording never fails because of a value
        text = json.dumps(to_json_safe(_unserializable(value)), separators=(",", ":"))
    if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
        text = json.dumps(
            {"$truncated": True, "size_bytes": len(text.encode()), "preview": text[:PREVIEW_CHARS]},
            separators=(",", ":"),
        )
    return text


def _encode(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), default=_fallback)
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(to_json_safe(value), separators=(",", ":"), default=_fallback)
    # (json.dumps escapes every non-ASCII character: without "\u" there is nothing to look for)
    if "\\u" in text and ("\\u0000" in text or _LONE_SURROGATE_ESCAPE.search(text)):
        text = json.dumps(to_json_safe(json.loads(text)), separators=(",", ":"))
    return text


def to_json_safe(value: Any, _depth: int = 0) -> Any:
    """A structure with only JSON types, for values `json.dumps` alone cannot take."""
    if _depth > 100:
        return _unserializable(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        try:
            int.__repr__(value)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            return {
                "$unserializable": "builtins.int",
                "repr": f"<int of {value.bit_length()} bits>",
            }
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, str):
        # after json.loads a valid surrogate pair is one character: what is left is unpaired
        return _SURROGATE_OR_NUL.sub("\ufffd", value)
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
