"""The SQL of the guarded upsert (see `persistence.upsert`), built once per shape.

On PostgreSQL a batch of reports arrives as one JSON document read by `json_to_recordset`
(`json.dumps` is C, while psycopg dumps array parameters element by element in Python); on
SQLite, which has neither, as a UNION ALL of one-row SELECTs padded to a power of two. The
guard compares `current>requested` with the legal moves of `persistence.status`.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections import namedtuple
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    String,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnElement, FromClause
from sqlalchemy.types import NullType

from persistence.models import (
    Base,
    FlowExecution,
    FlowTask,
    JSONValue,
    TaskExecution,
    UTCDateTime,
)
from persistence.records import TaskExecutionRecord
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus, allowed_transition_pairs

KEY_COLUMNS = ("flow_execution_id", "task_name", "task_execution_idx")

task_executions_table = Base.metadata.tables[TaskExecution.__tablename__]
flow_executions_table = Base.metadata.tables[FlowExecution.__tablename__]
_ft = Base.metadata.tables[FlowTask.__tablename__]

# Source columns of one report row, in order, with the types their binds need.
_SOURCE_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("id", Uuid()),
    ("flow_execution_id", Uuid()),
    ("task_name", String()),
    ("task_execution_idx", Integer()),
    ("status", String()),
    ("input", JSONValue),
    ("output", JSONValue),
    ("error", JSONValue),
    ("modified_by", String()),
    ("celery_task_id", String()),
    ("attempt", Integer()),
    ("worker", String()),
    ("queued_at", UTCDateTime()),
    ("started_at", UTCDateTime()),
    ("finished_at", UTCDateTime()),
    ("written_at", UTCDateTime()),
    ("steps", Integer()),
)
_SOURCE_NAMES = tuple(name for name, _ in _SOURCE_COLUMNS)

_JSON_COLUMNS = frozenset({"input", "output", "error"})

# Rows per statement. On PostgreSQL the reports travel as one array per column, so any
# number of rows is one statement shape: SQLAlchemy compiles it once and psycopg prepares
# it once per connection. SQLite has no arrays: its source is a UNION ALL of one-row
# SELECTs padded to a power of two (a padding row names no flow execution, so the join
# drops it), a handful of shapes in all; SQLite caps a compound SELECT at 500 terms.
CHUNK_ROWS = {"postgresql": 1000, "sqlite": 256}

RETURNED = (
    task_executions_table.c.id,
    task_executions_table.c.organization_id,
    task_executions_table.c.flow_execution_id,
    task_executions_table.c.task_name,
    task_executions_table.c.task_execution_idx,
    task_executions_table.c.status,
    task_executions_table.c.version,
    task_executions_table.c.attempt,
    task_executions_table.c.updated_at,
    task_executions_table.c.created_at,
    task_executions_table.c.started_at,
)
ReturnedRow = namedtuple("ReturnedRow", [column.name for column in RETURNED])  # type: ignore[misc]
# Every column, in `TaskExecutionRecord`'s order: for callers that answer with the record.
RETURNED_FULL = tuple(
    task_executions_table.c[name] for name in TaskExecutionRecord.__dataclass_fields__
)
ReturnedFullRow = namedtuple(  # type: ignore[misc]
    "ReturnedFullRow", [column.name for column in RETURNED_FULL]
)
FULL_STATUS_POSITION = list(TaskExecutionRecord.__dataclass_fields__).index("status")


def _source_row(report: TaskReport, written_at: Any) -> tuple[Any, ...]:
    status = report.status
    return (
        uuid.uuid4(),
        report.flow_execution_id,
        report.task_name,
        report.task_execution_idx,
        status.value,
        report.input,
        report.output,
        report.error,
        report.modified_by,
        report.celery_task_id,
        report.attempt or 0,
        report.worker,
        report.at if status is ExecutionStatus.QUEUED else report.queued_at,
        report.at if status is ExecutionStatus.RUNNING else report.started_at,
        report.at if status.is_terminal else None,
        written_at,
        len(report.steps),
    )


def _json_row(position: int, row: tuple[Any, ...], serialize: Callable[[Any], str]) -> str:
    scalars = {
        name: (value if value is None or isinstance(value, int | str) else str(value))
        for (name, _), value in zip(_SOURCE_COLUMNS, row, strict=True)
        if name not in _JSON_COLUMNS
    }
    scalars["position"] = position
    documents = ",".join(
        f'"{name}":{"null" if value is None else serialize(value)}'
        for (name, _), value in zip(_SOURCE_COLUMNS, row, strict=True)
        if name in _JSON_COLUMNS
    )
    return f"{json.dumps(scalars, separators=(',', ':'))[:-1]},{documents}}}"


def prepare_upsert(
    connection: Connection,
    reports: list[TaskReport],
    written_at: Any,
    full: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """The (cached) statement for this many reports, and its parameters."""
    dialect = connection.dialect
    rows = [_source_row(report, written_at) for report in reports]
    if dialect.name == "postgresql":
        # The whole batch travels as one JSON document (json_to_recordset): json.dumps is C
        # code, while psycopg dumps array parameters element by element in Python. input,
        # output and error are spliced in as the engine's JSON encoder wrote them.
        serialize: Callable[[Any], str] = getattr(dialect, "_json_serializer", None) or json.dumps
        document = "[" + ",".join(_json_row(n, row, serialize) for n, row in enumerate(rows)) + "]"
        return _upsert_statement(dialect.name, 0, full), {"reports": document}
    size = 1 << (len(rows) - 1).bit_length()
    parameters: dict[str, Any] = {
        f"{name}_{n}": value
        for n, row in enumerate(rows)
        for (name, _), value in zip(_SOURCE_COLUMNS, row, strict=True)
    }
    parameters.update(
        {f"{name}_{n}": None for n in range(len(rows), size) for name in _SOURCE_NAMES}
    )
    return _upsert_statement(dialect.name, size, full), parameters


def _source(dialect: str, size: int) -> FromClause:
    if dialect == "postgresql" and size == 0:
        columns = [
            column(name, postgresql.JSONB() if name in _JSON_COLUMNS else type_)
            for name, type_ in _SOURCE_COLUMNS
        ]
        document = cast(bindparam("reports", type_=Text()), postgresql.JSON())
        return (
            func.json_to_recordset(document)
            .table_valued(*columns, column("position", Integer()), name="reports")
            .render_derived(name="r", with_types=True)
        )
    # SQLite has no column aliases on VALUES; a UNION ALL of one-row SELECTs does the same.
    # (On PostgreSQL, size 1: one report as typed parameters, `single_report_statement`.)
    selects = [
        select(
            *(bindparam(f"{name}_{n}", type_=type_).label(name) for name, type_ in _SOURCE_COLUMNS)
        )
        for n in range(size)
    ]
    if len(selects) == 1:
        return selects[0].subquery("reports")
    return union_all(*selects).subquery("reports")


@functools.lru_cache(maxsize=32)
def _upsert_statement(dialect: str, size: int, full: bool = False) -> Any:
    """The upsert for `size` report rows (PostgreSQL: any number as one JSON document, pass
    0; or 1, one report as typed parameters), returning `RETURNED` or, if `full`, every
    column."""
    source = _source(dialect, size)
    # On PostgreSQL the record set of a batch is typed already (its JSON columns are read
    # as jsonb); one report's JSON parameters arrive as text and are cast to JSONB here.
    # (In SQLite a cast would change the stored affinity.)
    src = SimpleNamespace(
        **{
            name: cast(source.c[name], type_)
            if dialect == "postgresql" and size != 0 and name in _JSON_COLUMNS
            else source.c[name]
            for name, type_ in _SOURCE_COLUMNS
        }
    )
    # the flow execution a report names, in its flow (a flow execution of a stored flow
    # takes only the task names of its flow)
    flow_execution = and_(
        flow_executions_table.c.id == src.flow_execution_id,
        or_(
            flow_executions_table.c.flow_id.is_(None),
            exists()
            .where(
                _ft.c.flow_id == flow_executions_table.c.flow_id,
                _ft.c.task_name == src.task_name,
            )
            .correlate_except(_ft),
        ),
    )
    if dialect == "postgresql" and size == 0:
        # A batch: one primary-key lookup per report, whatever the planner would make of
        # a join (it takes the record set for 100 rows and, while `flow_executions` is
        # small by its statistics, hashes the whole table per batch, a plan a prepared
        # statement keeps as the table grows). LIMIT keeps the subquery from being
        # flattened into a join.
        owner: Any = (
            select(flow_executions_table.c.organization_id)
            .where(flow_execution)
            .limit(literal_column("1", Integer()))
            .lateral("flow_execution")
        )
        joined: Any = source.join(owner, true())
    else:
        owner, joined = flow_executions_table, source.join(flow_executions_table, flow_execution)
    proposed: Select[Any] = select(
        src.id,
        owner.c.organization_id,
        src.flow_execution_id,
        src.task_name,
        src.task_execution_idx,
        src.status,
        src.input,
        src.output,
        src.error,
        src.modified_by,
        src.celery_task_id,
        src.attempt,
        src.worker,
        src.queued_at,
        src.started_at,
        src.finished_at,
        src.written_at,
        src.written_at,
        src.steps,
    ).select_from(joined)
    if dialect == "sqlite":
        proposed = proposed.where(true())  # SQLite needs a WHERE before ON CONFLICT
    elif size == 0:
        proposed = proposed.order_by(source.c.position)  # lock rows in key order
    else:
        # one report (`single_report_statement`): only into the organization it is reported
        # for, whatever the role (none given: what row-level security lets the role see)
        organization = bindparam("organization_0", type_=Uuid())
        proposed = proposed.where(
            or_(organization.is_(None), flow_executions_table.c.organization_id == organization)
        )
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(task_executions_table).from_select(
        [
            "id",
            "organization_id",
            "flow_execution_id",
            "task_name",
            "task_execution_idx",
            "status",
            "input",
            "output",
            "error",
            "modified_by",
            "celery_task_id",
            "attempt",
            "worker",
            "queued_at",
            "started_at",
            "finished_at",
            "created_at",
            "updated_at",
            "version",
        ],
        proposed,
    )
    new, current = statement.excluded, task_executions_table.c
    if dialect == "postgresql" and size == 1:
        # One report: its status is known before the statement, so the guard asks whether
        # the record's status is one that status may follow (`legal_from`, which the session
        # function fills in): in every SET expression, a look in a list of one to six
        # statuses instead of building `current>requested` and finding it among all moves.
        legal_from = bindparam("legal_from", type_=NullType())
        moves = current.status == func.any(legal_from)
    else:
        moves = transition_guard(current.status, new.status, dialect)

    def on_move(moved: Any, otherwise: Any) -> Any:
        return case((moves, moved), else_=otherwise)

    # A report the guard refuses (a late `queued` after `completed`) still fills what the
    # record lacks: when it was queued or started, its input. It never changes the status,
    # the version or updated_at, so the caller learns it was refused or unchanged.
    return statement.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={
            "status": on_move(new.status, current.status),
            "input": on_move(
                func.coalesce(new.input, current.input),
                func.coalesce(current.input, new.input),
            ),
            "output": on_move(func.coalesce(new.output, current.output), current.output),
            "error": on_move(func.coalesce(new.error, current.error), current.error),
            "modified_by": on_move(new.modified_by, current.modified_by),
            "celery_task_id": func.coalesce(current.celery_task_id, new.celery_task_id),
            "attempt": on_move(
                case((new.attempt > current.attempt, new.attempt), else_=current.attempt),
                current.attempt,
            ),
            "worker": on_move(
                func.coalesce(new.worker, current.worker),
                func.coalesce(current.worker, new.worker),
            ),
            "queued_at": func.coalesce(current.queued_at, new.queued_at),
            "started_at": func.coalesce(current.started_at, new.started_at),
            "finished_at": on_move(
                func.coalesce(new.finished_at, current.finished_at), current.finished_at
            ),
            "updated_at": on_move(new.updated_at, current.updated_at),
            # one more per status passed: a finished report that says when a still queued
            # execution started passes `running` too (the history trigger adds that step)
            "version": on_move(
                current.version
                + case(
                    (
                        and_(
                            current.status == literal_column("'queued'", String()),
                            new.started_at.is_not(None),
                            new.finished_at.is_not(None),
                        ),
                        literal_column("2", Integer()),
                    ),
                    else_=literal_column("1", Integer()),
                ),
                current.version,
            ),
        },
        where=or_(
            moves,
            and_(current.queued_at.is_(None), new.queued_at.is_not(None)),
            and_(current.started_at.is_(None), new.started_at.is_not(None)),
            and_(current.input.is_(None), new.input.is_not(None)),
        ),
    ).returning(*(RETURNED_FULL if full else RETURNED))


def single_report_statement(full: bool) -> Any:
    """PostgreSQL: the upsert of one report given as typed parameters named `<column>_0`,
    in the order of `single_report_values`, `organization_0` (or NULL), and `legal_from`,
    the statuses the report's status may follow: the body of the single-report session
    function (`persistence.upsert_function`), which is one round trip per report."""
    return _upsert_statement("postgresql", 1, full)


def single_report_values(
    report: TaskReport, written_at: Any, serialize: Callable[[Any], str]
) -> list[Any]:
    """The parameters of `single_report_statement`, in order; JSON values as text."""
    values = list(_source_row(report, written_at))
    for position in _JSON_POSITIONS:
        if values[position] is not None:
            values[position] = serialize(values[position])
    return values


SINGLE_REPORT_PARAMETERS = tuple(f"{name}_0" for name in _SOURCE_NAMES)
_JSON_POSITIONS = tuple(n for n, name in enumerate(_SOURCE_NAMES) if name in _JSON_COLUMNS)


def transition_guard(current: Any, requested: Any, dialect: str = "sqlite") -> ColumnElement[bool]:
    """SQL truth of `persistence.status.can_transition(current, requested)`."""
    move = current + literal_column("'>'", String()) + requested
    if dialect == "postgresql":
        # One array parameter, however often the statement repeats the guard (every SET
        # expression does), with a one-letter name and no cast (psycopg sends a list of str
        # as text[]): the SQL text stays under psycopg's 4,096-character parse cache.
        legal = bindparam("m", allowed_transition_pairs(), type_=NullType())
        any_legal: ColumnElement[bool] = move == func.any(legal)
        return any_legal
    # The legal moves are constants of the code, written into the SQL as literals: a
    # statement that never changes text is parsed, cached and prepared once.
    pairs = [literal_column(f"'{pair}'", String()) for pair in allowed_transition_pairs()]
    moves: ColumnElement[bool] = move.in_(pairs)
    return moves
