"""One report, one round trip: the upsert as a function of the database session (PostgreSQL).

A single report written in its own transaction costs four round trips (BEGIN, the
organization setting of row-level security, the upsert, COMMIT) and a refused or repeated
one a fifth (the current status). Here the same statement runs inside a PL/pgSQL function,
created once per connection in `pg_temp` with the type of its answer (so both live and die
with the session, need no migration, and the upsert is always the SQL that
`persistence.upsert_statement` builds today):

    SELECT * FROM pg_temp.flowworker_report(<organization>, <the report's values>)

On an autocommit connection that one statement is the whole transaction. The function sets
the organization with `set_config(..., true)` first, so the row-level security policies
of the statements after it see it (and the setting ends with the statement); runs the
upsert, which joins only a flow execution of that organization whatever the role; and
when it wrote nothing returns the record as it stands, or, with no record at all, whether
the flow execution exists (in that organization). The function runs with its caller's
rights: a role subject to row-level security stays so.

A call costs mostly fixed work per statement, in the client and in PostgreSQL
(bench/README.md, `## upsert`), so the function does little besides the upsert: the lean
variant answers only what `UpsertResult` needs (not the key, which is the caller's own);
the answer is a composite type, not OUT parameters (whose row type PostgreSQL would build
anew from the catalog twice per call); the organization is set by a PL/pgSQL assignment
(no query of its own); and the guard, in ten SET expressions, looks the record's status up
in the short list of those the report's status may follow (a variable set once per call,
from `persistence.status.TRANSITIONS`), where the batch's guard builds `current>requested`
and looks for it among all legal moves.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from persistence.ddl import ORGANIZATION_SETTING
from persistence.reports import TaskReport
from persistence.status import TRANSITIONS
from persistence.upsert_statement import (
    KEY_COLUMNS,
    RETURNED,
    RETURNED_FULL,
    SINGLE_REPORT_PARAMETERS,
    ReturnedFullRow,
    single_report_statement,
    single_report_values,
)

_NAMES = {False: "pg_temp.flowworker_report", True: "pg_temp.flowworker_report_full"}
# connection.info key of an `UpsertFunctionSession` (SQLAlchemy clears the dict when it
# closes or invalidates the DBAPI connection, when the session's functions are gone too)
_SESSION = "flowworker_upsert_function"

# What each variant answers: the lean one what `UpsertResult` needs, `full` every column.
ANSWERED = {False: tuple(c for c in RETURNED if c.name not in KEY_COLUMNS), True: RETURNED_FULL}
AnsweredRow = namedtuple("AnsweredRow", [c.name for c in ANSWERED[False]])  # type: ignore[misc]


@dataclass(slots=True)
class UpsertFunctionSession:
    """What one database session keeps for the function: a cursor to call it with (a new
    psycopg cursor per call costs about 10 us of CPU), the engine's JSON encoder, and the
    call of each variant it has created."""

    cursor: Any
    serialize: Callable[[Any], str]
    calls: dict[bool, str] = field(default_factory=dict)


def upsert_function_session(connection: Connection, full: bool) -> UpsertFunctionSession | None:
    """The session function of `connection`, created first if the connection lacks it; None
    where the one-round-trip path is not taken: other than PostgreSQL through psycopg, or in
    a transaction before the function exists (one created in a transaction that rolls back
    would be gone while the connection still counted on it)."""
    session: UpsertFunctionSession | None = connection.info.get(_SESSION)
    if session is not None and full in session.calls:
        return session
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return None
    driver_connection = connection.connection.driver_connection
    if not getattr(driver_connection, "autocommit", False):
        return None
    assert driver_connection is not None, "the connection is closed"
    if session is None:
        serialize = getattr(dialect, "_json_serializer", None) or json.dumps
        session = UpsertFunctionSession(driver_connection.cursor(), serialize)
        connection.info[_SESSION] = session
    session.cursor.execute(upsert_function_ddl(dialect, full))
    session.calls[full] = upsert_function_call(dialect, full)
    return session


def call_upsert_function(
    session: UpsertFunctionSession,
    report: TaskReport,
    written_at: dt.datetime,
    organization_id: uuid.UUID | None,
    full: bool,
) -> tuple[Any | None, bool]:
    """Apply `report` through the session function: the record's row (`ANSWERED[full]`) or
    None when there is none, and whether the flow execution exists (in `organization_id`,
    if given)."""
    cursor = session.cursor
    cursor.execute(
        session.calls[full],
        upsert_function_arguments(report, written_at, organization_id, session.serialize),
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
    """The function's answer: the record's row (`ANSWERED[full]`), or None and whether the
    flow execution exists."""
    assert row is not None, "the function returns one row"
    if row[0] is None:
        return None, bool(row[-1])
    return (ReturnedFullRow if full else AnsweredRow)(*row[:-1]), True


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
    `upsert_function_ddl`): its answer's columns, `ANSWERED[full]` and `flow_known`."""
    arguments = ", ".join(f"%s::{type_}" for type_ in _parameter_types(dialect))
    return f"SELECT * FROM {_NAMES[full]}({arguments})"


@functools.cache
def upsert_function_ddl(dialect: Dialect, full: bool) -> str:
    """The SQL that (re)creates the function in the session's `pg_temp`, with the composite
    type it answers with."""
    statement = single_report_statement(full)
    answered = ANSWERED[full]
    answer_type = f"{_NAMES[full]}_answer"
    fields = ", ".join(f"{c.name} {c.type.compile(dialect)}" for c in answered)
    # what the upsert returns but the function does not answer (the key, in the lean
    # variant) goes into local variables
    answered_names = {c.name for c in answered}
    returned = RETURNED_FULL if full else RETURNED
    local = "".join(
        f"\n    {c.name} {c.type.compile(dialect)};"
        for c in returned
        if c.name not in answered_names
    )
    into = ", ".join(f"answer.{c.name}" if c.name in answered_names else c.name for c in returned)
    answer_fields = ", ".join(f"answer.{c.name}" for c in answered)
    selected = ", ".join(f"t.{c.name}" for c in answered)
    # $1 is the organization; the report's values follow in SINGLE_REPORT_PARAMETERS order
    argument = {name: f"${n}" for n, name in enumerate(SINGLE_REPORT_PARAMETERS, start=2)}
    argument["organization_0"] = "$1"
    # the guard's list (`single_report_statement`): a variable, a parameter of the upsert's
    # plan (a literal array would be built into a hash table in every statement)
    argument["legal_from"] = "legal_from"
    body = _body_sql(statement, dialect, argument)
    key = " AND ".join(f"t.{name} = {argument[f'{name}_0']}" for name in KEY_COLUMNS)
    flow_execution = argument["flow_execution_id_0"]
    # whatever the role, a report lands only in the organization it was sent for: the
    # upsert joins only such a flow execution, and the reads below see only such rows
    in_organization = "($1 IS NULL OR {}.organization_id = $1::uuid)"
    # A composite type rather than OUT parameters: PostgreSQL builds the row type of OUT
    # parameters anew from the function's catalog row twice per call (decompressing its
    # arrays, as the long body makes that row large); a type's comes from its cache.
    return f"""
DROP TYPE IF EXISTS {answer_type} CASCADE;
CREATE TYPE {answer_type} AS ({fields}, flow_known boolean);
CREATE FUNCTION {_NAMES[full]}({", ".join(_parameter_types(dialect))})
RETURNS {answer_type}
LANGUAGE plpgsql AS $flowworker$
#variable_conflict use_column
DECLARE
    answer {answer_type};{local}
    legal_from text[] := {_legal_from(argument["status_0"])};
    organization_setting text;
BEGIN
    IF $1 IS NOT NULL THEN
        organization_setting := set_config('{ORGANIZATION_SETTING}', $1, true);
    END IF;
    {body}
        INTO {into};
    IF FOUND THEN
        RETURN answer;
    END IF;
    -- refused, or a repeat: the record as it stands
    SELECT {selected} INTO {answer_fields} FROM task_executions t
    WHERE {key} AND {in_organization.format("t")};
    IF FOUND THEN
        RETURN answer;
    END IF;
    answer.flow_known := EXISTS (
        SELECT FROM flow_executions f
        WHERE f.id = {flow_execution} AND {in_organization.format("f")}
    );
    RETURN answer;
END
$flowworker$
"""


def _legal_from(status: str) -> str:
    """SQL of the statuses that a report of status `status` (SQL) may follow."""
    sources: dict[str, list[str]] = {}
    for current, targets in TRANSITIONS.items():
        for target in targets:
            sources.setdefault(target.value, []).append(f"'{current.value}'")
    whens = " ".join(
        f"WHEN '{target}' THEN ARRAY[{', '.join(sorted(currents))}]"
        for target, currents in sorted(sources.items())
    )
    return f"CASE {status} {whens} ELSE ARRAY[]::text[] END"


def _body_sql(statement: Any, dialect: Dialect, argument: dict[str, str]) -> str:
    """The compiled upsert with its parameters written in: `argument` gives the SQL of each
    (the function's arguments and variables), every other one (small integers) becomes a
    literal, since it is a constant of the code."""
    compiled = statement.compile(dialect=dialect)
    sql: str = compiled.string
    for name, value in compiled.construct_params(dict.fromkeys(argument)).items():
        if name in argument:
            literal = argument[name]
        elif isinstance(value, int) and not isinstance(value, bool):
            literal = str(value)
        else:
            raise TypeError(f"no literal form for the upsert's parameter {name}={value!r}")
        sql = sql.replace(f"%({name})s", literal)
    if "%(" in sql:
        raise ValueError("the upsert has a parameter the session function does not fill")
    return sql.replace("%%", "%")
