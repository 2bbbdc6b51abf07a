"""persistence/jsonvalue.py: whatever a task takes or returns, recording it never fails, and
what cannot be JSON is stored in the documented fallback forms."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from persistence.database import create_database_engine, transaction
from persistence.jsonvalue import DEFAULT_MAX_BYTES, PREVIEW_CHARS, encode_json
from persistence.models import TaskExecution
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_execution
from tests.persistence.helpers import make_flow_execution


def stored(value: Any, **kwargs: Any) -> Any:
    """What a JSON column holds for `value` (as its reader sees it)."""
    return json.loads(encode_json(value, **kwargs))


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


# --- fallback forms ------------------------------------------------------------------------


def test_plain_json_is_stored_as_is() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "é😀"}}
    assert stored(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05+00:00"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (dt.time(3, 4, 5), "03:04:05"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (decimal.Decimal("1.10"), "1.10"),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        ((1, "two"), [1, "two"]),
        (b"\x00\xff", {"$bytes": base64.b64encode(b"\x00\xff").decode()}),
        (bytearray(b"ab"), {"$bytes": "YWI="}),
    ],
)
def test_values_with_a_natural_json_form(value: Any, expected: Any) -> None:
    assert stored(value) == expected
    assert stored({"nested": [value]}) == {"nested": [expected]}


def test_unserializable_values_keep_their_type_and_repr() -> None:
    assert stored(Opaque()) == {
        "$unserializable": f"{__name__}.Opaque",
        "repr": "<Opaque thing>",
    }
    assert stored({"when": object()})["when"]["$unserializable"] == "builtins.object"


def test_a_failing_repr_does_not_fail_the_recording() -> None:
    assert stored([BadRepr()]) == [
        {"$unserializable": f"{__name__}.BadRepr", "repr": "<repr failed>"}
    ]


def test_a_long_repr_is_cut() -> None:
    class Long:
        def __repr__(self) -> str:
            return "x" * 10_000

    assert len(stored(Long())["repr"]) == 500


@pytest.mark.parametrize(
    ("value", "expected"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")],
)
def test_nan_and_infinities_become_strings(value: float, expected: str) -> None:
    assert stored(value) == expected
    assert stored({"x": [1.5, value]}) == {"x": [1.5, expected]}


def test_nul_characters_become_replacement_characters_in_values_and_keys() -> None:
    assert stored("a\x00b") == "a\ufffdb"
    assert stored({"k\x00": ["\x00"]}) == {"k\ufffd": ["\ufffd"]}


def test_unpaired_surrogates_become_replacement_characters() -> None:
    """Undecodable file names (os.fsdecode) carry lone surrogates; JSONB refuses them."""
    assert stored("caf\udce9") == "caf\ufffd"
    assert stored({"\ud800": "x\udbff"}) == {"\ufffd": "x\ufffd"}
    # a real pair (an emoji) is kept, and so is text that only looks like an escape
    assert stored("😀 \\ud800 \\u0000") == "😀 \\ud800 \\u0000"


def test_an_integer_too_long_to_print_gets_a_marker() -> None:
    huge = 10**5000
    assert stored({"n": huge, "ok": 10**100}) == {
        "n": {"$unserializable": "builtins.int", "repr": f"<int of {huge.bit_length()} bits>"},
        "ok": 10**100,
    }


def test_circular_and_very_deep_structures_do_not_fail() -> None:
    circular: list[Any] = [1]
    circular.append(circular)
    assert stored(circular)[0] == 1
    deep: Any = "bottom"
    for _ in range(5_000):
        deep = [deep]
    assert isinstance(stored(deep), list)


def test_mapping_keys_that_json_refuses_become_strings() -> None:
    assert stored({(1, 2): "pair", 3: "three"}) == {"(1, 2)": "pair", "3": "three"}


# --- the size cap --------------------------------------------------------------------------


def test_a_document_over_the_cap_becomes_a_visible_truncation_marker() -> None:
    value = {"blob": "x" * 5_000}
    text = json.dumps(value, separators=(",", ":"))
    marker = stored(value, max_bytes=4096)
    assert marker == {
        "$truncated": True,
        "size_bytes": len(text.encode()),
        "preview": text[:PREVIEW_CHARS],
    }


def test_the_cap_counts_bytes_and_a_document_at_the_cap_is_kept() -> None:
    at_cap = "y" * (4096 - 2)  # plus the two quotes
    assert stored(at_cap, max_bytes=4096) == at_cap
    assert stored(at_cap + "y", max_bytes=4096)["$truncated"] is True
    # non-ASCII is escaped (ensure_ascii): 'é' costs 6 bytes
    assert stored("é" * 700, max_bytes=4096)["$truncated"] is True
    assert DEFAULT_MAX_BYTES == 1024 * 1024


# --- through the database ------------------------------------------------------------------


@pytest.fixture
def capped_engine(engine: Engine) -> Iterator[Engine]:
    """The same database through an engine whose JSON cap is 4 KiB."""
    capped = create_database_engine(
        engine.url.render_as_string(hide_password=False), json_max_bytes=4096
    )
    yield capped
    capped.dispose()


def _store(engine: Engine, **fields: Any) -> Any:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(
            connection, TaskReport(flow_execution_id, "t", 0, S.COMPLETED, **fields)
        )
        return connection.execute(
            select(TaskExecution.__table__).where(
                TaskExecution.flow_execution_id == flow_execution_id
            )
        ).one()


def test_the_cap_is_configured_on_the_engine(engine: Engine, capped_engine: Engine) -> None:
    value = {"blob": "z" * 5_000}
    assert _store(engine, output=value).output == value
    row = _store(capped_engine, output=value, input={"small": 1}, error={"e": "w" * 9_000})
    assert row.output["$truncated"] is True
    assert row.output["size_bytes"] > 4096
    assert row.error["$truncated"] is True
    assert row.input == {"small": 1}


def test_odd_values_reach_the_database_in_fallback_form(engine: Engine) -> None:
    value = {
        "nan": math.nan,
        "nul": "a\x00b",
        "surrogate": "caf\udce9",
        "huge": 10**5000,
        "when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        "thing": Opaque(),
    }
    row = _store(engine, input=value, output=[value], error=value)
    assert row.input == stored(value)
    assert row.output == [stored(value)]
    assert row.input["surrogate"] == "caf\ufffd"


# --- property: never raises, and the database takes what it produces -----------------------

ANY_CHARACTER = st.one_of(
    st.characters(),
    st.characters(codec=None, categories=["Cs"]),  # unpaired surrogates
    st.sampled_from(["\x00", "😀", "\\", "u", "0", "d", "8", "é"]),  # and "\\u0000"-lookalikes
)
TEXT = st.text(alphabet=ANY_CHARACTER, max_size=20)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(5000).map(lambda digits: 10**digits),  # too long to print
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.binary(max_size=10),
    st.decimals(allow_nan=True),
    st.uuids(),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.builds(Opaque),
    st.builds(BadRepr),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.one_of(TEXT, st.integers(), st.none()), children, max_size=4),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON documents; floats compared loosely (JSONB keeps numbers as numeric,
    and 1e308 comes back as an integer)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and not isinstance(a, bool)
            and math.isclose(float(a), float(b), rel_tol=1e-15)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@given(value=VALUES)
def test_encode_json_never_raises_and_yields_storable_json(value: Any) -> None:
    text = encode_json(value)
    assert text.isascii()
    document = json.loads(text)  # valid JSON, without NaN
    assert "\\u0000" not in json.dumps(document)
    rendered = json.dumps(document, ensure_ascii=False)
    rendered.encode("utf-8")  # no unpaired surrogate left


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=VALUES)
def test_the_database_stores_whatever_encode_json_produces(engine: Engine, value: Any) -> None:
    row = _store(engine, output=value)
    if value is None:
        assert row.output is None
    else:
        assert same_json(row.output, stored(value)), (row.output, stored(value))
