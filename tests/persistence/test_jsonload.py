"""persistence/jsonload.py: the fast JSON reader gives exactly what `json.loads` gives (same
values, same types, same errors), alone and through PostgreSQL's jsonb."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from persistence.database import transaction
from persistence.jsonload import loads
from persistence.models import TaskExecution
from persistence.queries import fetch_task_execution
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_execution
from tests.persistence.helpers import make_flow_execution


def exactly(value: Any) -> str:
    """A value's repr tells 1 from 1.0 from True, -0.0 from 0.0 and shows key order."""
    return repr(value)


def outcome(read: Callable[[bytes], Any], document: bytes) -> str:
    try:
        return exactly(read(document))
    except Exception as error:
        return f"raises {type(error).__name__}"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(st.characters(exclude_categories=())),  # lone surrogates too
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.booleans())
def test_any_document_reads_as_json_loads_reads_it(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    document = text.encode("utf-8", "surrogatepass") if not ascii_only else text.encode()
    try:
        expected = json.loads(document)
    except UnicodeDecodeError:  # a lone surrogate written raw: not UTF-8
        with pytest.raises(UnicodeDecodeError):
            loads(document)
        return
    assert exactly(loads(document)) == exactly(expected)
    assert exactly(loads(memoryview(document))) == exactly(expected)


@pytest.mark.parametrize(
    "document",
    [
        # integers beyond 64 bits: orjson alone would return floats
        b"18446744073709551616",
        b"-9223372036854775809",
        b'{"big": [340282366920938463463374607431768211457, -18446744073709551617]}',
        b"18446744073709551615",
        b"-9223372036854775808",
        # as PostgreSQL prints jsonb numbers: in full, never with an exponent
        b"1" + b"0" * 400,
        b"0." + b"0" * 300 + b"15",
        b"123456789012345678901234567890.5",
        b"1e400",  # json.loads: inf; orjson refuses
        b"-0",
        b"-0.0",
        b"0.1",
        b"1.7976931348623157e308",
        b'"\\ud83d\\ude00 \\u00e9 \\u4e2d"',
        '"é 中 😀"'.encode(),
        b'"\\ud800"',  # a lone surrogate: orjson refuses, json.loads keeps it
        b"NaN",  # json.loads accepts it, orjson does not
        b'{"a": 1, "a": 2}',
        b'{"$truncated": true, "size_bytes": 1048600, "preview": "xxxx"}',
        b"[" * 900 + b"]" * 900,
        b"[" * 1500 + b"]" * 1500,  # deeper than orjson's 1,024 levels (and json.loads')
        b"  [1, 2.5, null, true, false, {}, []]  ",
        # not JSON: the same error
        b'"\xff"',
        b"[1,",
        b"",
        b"{'a': 1}",
    ],
)
def test_documents_where_orjson_alone_would_differ(document: bytes) -> None:
    assert outcome(loads, document) == outcome(json.loads, document)


# Values a task may return, as they come back from PostgreSQL's jsonb: the query layer's
# reader (binary format, `loads`) against SQLAlchemy's ordinary path (psycopg's json.loads).
STORED = [
    {"nested": {"list": [1, [2, [3, {"deep": None}]]], "empty": {}, "t": True}},
    {"unicode": 'é 中 😀 \u2028 \t\n"\\', "clé": "ü"},
    {"ints": [2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**70, -(2**70), 10**30]},
    {"floats": [0.1, 1.5e300, 1.5e-300, -0.0, 2.0**53 + 2, 1e16, 123.456]},
    [None, None],
    None,
    "x" * (1024 * 1024 + 1),  # over the size cap: stored as the truncation marker
    12345678901234567890123,
]


@pytest.mark.parametrize("value", STORED, ids=range(len(STORED)))
def test_jsonb_reads_back_as_psycopg_reads_it(pg_engine: Engine, value: Any) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    with transaction(pg_engine, organization_id) as connection:
        result = upsert_task_execution(
            connection,
            TaskReport(flow_execution_id, "t", 0, S.FAILED, input=value, error={"v": value}),
        )
    with transaction(pg_engine, organization_id) as connection:
        record = fetch_task_execution(connection, organization_id, result.task_execution_id)
        ordinary = connection.execute(
            select(TaskExecution.input, TaskExecution.error).where(
                TaskExecution.id == result.task_execution_id
            )
        ).one()
    assert exactly((record.input, record.error)) == exactly(tuple(ordinary))
    if isinstance(value, str) and len(value) > 1024 * 1024:
        assert record.input["$truncated"] is True


def test_the_loader_is_registered_on_the_query_cursor_only(pg_engine: Engine) -> None:
    """Other code on the same connection keeps psycopg's own jsonb loaders."""
    from psycopg.pq import Format
    from psycopg.types.json import JsonbBinaryLoader, JsonbLoader

    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    with transaction(pg_engine, organization_id) as connection:
        result = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "t", 0, S.QUEUED, input={"a": 1})
        )
        record = fetch_task_execution(connection, organization_id, result.task_execution_id)
        assert record.input == {"a": 1}
        adapters = connection.connection.driver_connection.adapters  # type: ignore[union-attr]
        jsonb = adapters.types["jsonb"].oid
        assert adapters.get_loader(jsonb, Format.BINARY) is JsonbBinaryLoader
        assert adapters.get_loader(jsonb, Format.TEXT) is JsonbLoader
