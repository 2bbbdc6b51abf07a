"""Reading stored JSON documents back: orjson's speed, exactly the values of `json.loads`.

psycopg parses every `jsonb` value it fetches with `json.loads`; on a 50-row page of task
executions (three documents a row) that is half the CPU of the fetch (`bench/query.py`).
orjson parses the same documents several times faster into the same Python types. Where
the two would not agree, `loads` leaves the document to `json.loads`:

* an integer literal beyond 64 bits: orjson turns it into a float, silently. Any run of 19
  digits (every integer outside the 64-bit range has one) sends the document to
  `json.loads`. PostgreSQL prints jsonb numbers in full (`1e400` comes back as a 401-digit
  integer), so this is not only a question of what a task returned;
* what orjson refuses: a number beyond the float range, a lone surrogate, nesting deeper
  than 1,024 levels, `NaN`, invalid UTF-8. `json.loads` then returns or raises what it
  always did.

`JsonbBinaryLoader` is the psycopg loader built on `loads`; the query layer registers it on
its own cursors (`persistence.compiled.fetch_query_rows`), not on the connection.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from psycopg import DataError
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

# bytes.translate and `in` run in C: cheaper than a regular expression's search
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def loads(document: Buffer) -> Any:
    """The value of a JSON document (UTF-8 bytes), as `json.loads` would return it."""
    document = bytes(document)
    if len(document) >= len(_LONG_NUMBER) and _LONG_NUMBER in document.translate(_DIGITS_AS_ZERO):
        return json.loads(document)
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError:
        return json.loads(document)


class JsonbBinaryLoader(Loader):
    """jsonb in binary format: a version byte (1), then the document's text."""

    format = Format.BINARY

    def load(self, data: Buffer) -> Any:
        if data and data[0] != 1:
            raise DataError(f"unknown jsonb binary format: {data[0]}")
        return loads(data[1:])


def register_jsonb_loader(context: AdaptContext) -> None:
    """Parse jsonb fetched in binary format with `loads` in `context` (a cursor, say)."""
    context.adapters.register_loader("jsonb", JsonbBinaryLoader)
