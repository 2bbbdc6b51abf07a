"""One report, one round trip: the upsert as a function of the database session (PostgreSQL).

A single report written in its own transaction costs four round trips (BEGIN, the
organization setting of row-level security, the upsert, COMMIT) and a refused or repeated
one a fifth (the current status). Here the same statement runs inside a PL/pgSQL function,
created once per connection in `pg_temp` (so it lives and dies with the session, needs no
migration, and is always the SQL that `persistence.upsert_statement` builds today):

    SELECT * FROM pg_temp.flowworker_report(<organization>, <the report's values>)

On an autocommit connection that one statement is the whole transaction. The function sets
the organization with `set_config(..., true)` first, so the row-level security policies
of the statements after it see it (and the setting ends with the statement); runs the
upsert, which joins only a flow execution of that organization whatever the role; and
when it wrote nothing returns the record as it stands, or, with no record at all, whether
the flow execution exists (in that organization). The function runs with its caller's
rights: a role subject to row-level security stays so.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from persistence.ddl import ORGANIZATION_SETTING
from persistence.reports import TaskReport
from persistence.upsert_statement import (
    KEY_COLUMNS,
    RETURNED,
    RETURNED_FULL,
    SINGLE_REPORT_PARAMETERS,
    ReturnedFullRow,
    ReturnedRow,
    single_report_statement,
    single_report_values,
)

_NAMES = {False: "pg_temp.flowworker_report", True: "pg_temp.flowworker_report_full"}
# connection.info key of a `_Session` (SQLAlchemy clears the dict when it closes or
# invalidates the DBAPI connection, when the session's functions are gone too)
_SESSION = "flowworker_upsert_function"


def can_call_upsert_function(connection: Connection, full: bool) -> bool:
    """Whether `connection` takes the one-round-trip path: PostgreSQL through psycopg, and
    either outside a transaction (autocommit, where creating the function cannot be rolled
    back behind our back) or with the function created already."""
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return False
    session = connection.info.get(_SESSION)
    if session is not None and full in session.created:
        return True
    return bool(getattr(connection.connection.driver_connection, "autocommit", False))


@dataclass(slots=True)
class _Session:
    """What one database session keeps for the function: which variants it has created, and
    a cursor to call them with (a new psycopg cursor per call costs about 10 us of CPU)."""

    cursor: Any
    created: set[bool] = field(default_factory=set)


def call_upsert_function(
    connection: Connection,
    report: TaskReport,
    written_at: dt.datetime,
    organization_id: uuid.UUID | None,
    full: bool,
) -> tuple[Any | None, bool]:
    """Apply `report` through the session function: the record's row (`RETURNED` or, if
    `full`, every column) or None when there is none, and whether the flow execution exists
    (in `organization_id`, if given). Creates the function first if this connection lacks
    it (see `can_call_upsert_function`)."""
    dialect = connection.dialect
    session: _Session | None = connection.info.get(_SESSION)
    if session is None:
        driver_connection = connection.connection.driver_connection
        assert driver_connection is not None, "the connection is closed"
        session = connection.info[_SESSION] = _Session(driver_connection.cursor())
    cursor = session.cursor
    if full not in session.created:
        cursor.execute(upsert_function_ddl(dialect, full))
        session.created.add(full)
    serialize: Callable[[Any], str] = getattr(dialect, "_json_serializer", None) or json.dumps
    cursor.execute(
        upsert_function_call(dialect, full),
        upsert_function_arguments(report, written_at, organization_id, serialize),
    )
    return upsert_function_row(cursor.fetchone(), full)


def upsert_function_arguments(
    report: TaskReport,
    written_at: dt.datetime,
    organization_id: uuid.UUID | None,
    serialize: Callable[[Any], str],
) -> tuple[Any, ...]:
    """The arguments of `upsert_function_call`."""
    organization = None if organization_id is None else str(organization_id)
    return (organization, *single_report_values(report, written_at, serialize))


def upsert_function_row(row: Sequence[Any] | None, full: bool) -> tuple[Any | None, bool]:
    """The function's answer: the record's row, or None and whether the flow execution
    exists."""
    assert row is not None, "the function returns one row"
    if row[0] is None:
        return None, bool(row[-1])
    return (ReturnedFullRow if full else ReturnedRow)(*row[:-1]), True


def _parameter_types(dialect: Dialect) -> list[str]:
    """SQL types of the function's arguments: the organization, then the report's values."""
    statement = single_report_statement(False)
    compiled = statement.compile(dialect=dialect)
    return ["text"] + [
        compiled.binds[name].type.compile(dialect) for name in SINGLE_REPORT_PARAMETERS
    ]


@functools.cache
def upsert_function_call(dialect: Dialect, full: bool) -> str:
    """The SQL that calls the function (it must exist on the connection: see
    `upsert_function_ddl`)."""
    arguments = ", ".join(f"%s::{type_}" for type_ in _parameter_types(dialect))
    return f"SELECT * FROM {_NAMES[full]}({arguments})"


@functools.cache
def upsert_function_ddl(dialect: Dialect, full: bool) -> str:
    """The SQL that creates (or replaces) the function in the session's `pg_temp`."""
    columns = RETURNED_FULL if full else RETURNED
    declared = ", ".join(f"OUT {c.name} {c.type.compile(dialect)}" for c in columns)
    names = ", ".join(c.name for c in columns)
    selected = ", ".join(f"t.{c.name}" for c in columns)
    # $1 is the organization; the report's values follow in SINGLE_REPORT_PARAMETERS order
    argument = {name: f"${n}" for n, name in enumerate(SINGLE_REPORT_PARAMETERS, start=2)}
    argument["organization_0"] = "$1"
    key = " AND ".join(f"t.{name} = {argument[f'{name}_0']}" for name in KEY_COLUMNS)
    flow_execution = argument["flow_execution_id_0"]
    # whatever the role, a report lands only in the organization it was sent for: the
    # upsert joins only such a flow execution, and the reads below see only such rows
    in_organization = "($1 IS NULL OR {}.organization_id = $1::uuid)"
    return f"""
CREATE OR REPLACE FUNCTION {_NAMES[full]}({", ".join(_parameter_types(dialect))},
    {declared}, OUT flow_known boolean)
LANGUAGE plpgsql AS $flowworker$
#variable_conflict use_column
BEGIN
    IF $1 IS NOT NULL THEN
        PERFORM set_config('{ORGANIZATION_SETTING}', $1, true);
    END IF;
    {_body_sql(single_report_statement(full), dialect, argument)}
        INTO {names};
    IF FOUND THEN
        RETURN;
    END IF;
    -- refused, or a repeat: the record as it stands
    SELECT {selected} INTO {names} FROM task_executions t
    WHERE {key} AND {in_organization.format("t")};
    IF FOUND THEN
        RETURN;
    END IF;
    flow_known := EXISTS (
        SELECT FROM flow_executions f
        WHERE f.id = {flow_execution} AND {in_organization.format("f")}
    );
END
$flowworker$
"""


def _body_sql(statement: Any, dialect: Dialect, argument: dict[str, str]) -> str:
    """The compiled upsert with its parameters written in: the report's values become the
    function's arguments, every other parameter (the legal moves, small integers) a
    literal, since they are constants of the code."""
    compiled = statement.compile(dialect=dialect)
    sql: str = compiled.string
    for name, value in compiled.construct_params(dict.fromkeys(argument)).items():
        if name in argument:
            literal = argument[name]
        elif isinstance(value, int) and not isinstance(value, bool):
            literal = str(value)
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            quoted = ", ".join("'" + item.replace("'", "''") + "'" for item in value)
            literal = f"ARRAY[{quoted}]::text[]"
        else:
            raise TypeError(f"no literal form for the upsert's parameter {name}={value!r}")
        sql = sql.replace(f"%({name})s", literal)
    if "%(" in sql:
        raise ValueError("the upsert has a parameter the session function does not fill")
    return sql.replace("%%", "%")
