"""Running the query layer's fixed Core statements with little per-call work.

On PostgreSQL with psycopg, SQLAlchemy's per-execution machinery (execution context, reading
`cursor.description`, result metadata, `Row` objects) costs about 0.3 ms of CPU per call on
a small machine, more than the database takes to find one row by primary key
(`bench/query.py`). psycopg already returns what the records hold (UUIDs, aware datetimes,
parsed JSON), so there this module compiles each statement once, with SQLAlchemy, for the
connection's dialect, and runs the compiled SQL on the connection's own DBAPI cursor, in
the caller's transaction. The SQL still comes from the Core statement: there is one source.

Other dialects (SQLite) need SQLAlchemy's type processing and take the ordinary path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    compiled: Any
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]

    def parameters(self, given: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = self.compiled.construct_params(given)
        for name, process in self.processors:
            values[name] = process(values[name])
        return values


@functools.lru_cache(maxsize=2048)
def _plan(statement: Select[Any], dialect: Dialect) -> _Plan:
    compiled = statement.compile(dialect=dialect)
    processors = []
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((name, process))
    return _Plan(compiled.string, compiled, tuple(processors))


def fetch_rows(
    connection: Connection, statement: Select[Any], parameters: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """Every row of `statement` as tuples, in its column order."""
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return connection.execute(statement, dict(parameters)).all()
    plan = _plan(statement, dialect)
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None, "the connection is closed"
    with driver_connection.cursor() as cursor:
        cursor.execute(plan.sql, plan.parameters(parameters))
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows


def fetch_query_rows(
    connection: Connection, statement: Select[Any], parameters: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """`fetch_rows` for the query layer's reads, with less CPU per row on psycopg.

    Rows come in binary format (no text to parse for UUIDs, integers and timestamps) and
    jsonb through `persistence.jsonload` (the values of `json.loads`, parsed by orjson),
    registered on this cursor only. Every column type the query layer selects has a binary
    loader in psycopg; a type without one would come back as bytes
    (tests/persistence/test_queries.py compares every statement with SQLAlchemy's result).
    """
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return connection.execute(statement, dict(parameters)).all()
    from persistence.jsonload import register_jsonb_loader  # imports psycopg

    plan = _plan(statement, dialect)
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None, "the connection is closed"
    with driver_connection.cursor() as cursor:
        register_jsonb_loader(cursor)
        cursor.execute(plan.sql, plan.parameters(parameters), binary=True)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows
