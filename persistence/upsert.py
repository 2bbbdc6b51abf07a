"""The one way to write a task execution: an atomic, guarded, batched upsert.

Every report becomes part of a single statement

    INSERT INTO task_executions (...)
    SELECT reports.*, flow_executions.organization_id
    FROM <reports> JOIN flow_executions ON flow_executions.id = reports.flow_execution_id
         AND (flow_executions.flow_id IS NULL OR <the task name is in flow_tasks>)
    ON CONFLICT (flow_execution_id, task_name, task_execution_idx) DO UPDATE SET ...
    WHERE task_executions.status || '>' || excluded.status IN (<legal moves>)
    RETURNING ...

so the database decides, under the row lock, whether a report moves the record forward. A
report the guard refuses, or one repeating the current status, returns no row; one more
query then tells the caller the current status (or, with no record at all, whether the
flow execution is missing, `UnknownFlowExecution`, or the name is not in its flow,
`TaskNotInFlow`). The organization always comes from the
flow execution row, never from the reporter, and the status history is appended by a
trigger (`persistence/ddl.py`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

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
    literal,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnElement, FromClause

from persistence.compiled import fetch_rows
from persistence.errors import TaskNotInFlow, UnknownFlowExecution
from persistence.models import (
    Base,
    FlowExecution,
    FlowTask,
    JSONValue,
    TaskExecution,
    UTCDateTime,
)
from persistence.records import TaskExecutionRecord
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult, utcnow
from persistence.status import ExecutionStatus, allowed_transition_pairs

KEY_COLUMNS = ("flow_execution_id", "task_name", "task_execution_idx")

_te = Base.metadata.tables[TaskExecution.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
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
)
_SOURCE_NAMES = tuple(name for name, _ in _SOURCE_COLUMNS)

_JSON_COLUMNS = frozenset({"input", "output", "error"})

# Rows per statement. On PostgreSQL the reports travel as one array per column, so any
# number of rows is one statement shape: SQLAlchemy compiles it once and psycopg prepares
# it once per connection. SQLite has no arrays: its source is a UNION ALL of one-row
# SELECTs padded to a power of two (a padding row names no flow execution, so the join
# drops it), a handful of shapes in all; SQLite caps a compound SELECT at 500 terms.
_CHUNK_ROWS = {"postgresql": 1000, "sqlite": 256}

_RETURNED = (
    _te.c.id,
    _te.c.organization_id,
    _te.c.flow_execution_id,
    _te.c.task_name,
    _te.c.task_execution_idx,
    _te.c.status,
    _te.c.version,
    _te.c.attempt,
    _te.c.updated_at,
)
_Returned = namedtuple("_Returned", [column.name for column in _RETURNED])  # type: ignore[misc]
# Every column, in `TaskExecutionRecord`'s order: for callers that answer with the record.
_RETURNED_FULL = tuple(_te.c[name] for name in TaskExecutionRecord.__dataclass_fields__)
_ReturnedFull = namedtuple(  # type: ignore[misc]
    "_ReturnedFull", [column.name for column in _RETURNED_FULL]
)
_FULL_STATUS_POSITION = list(TaskExecutionRecord.__dataclass_fields__).index("status")


def _run(
    connection: Connection, statement: Any, parameters: dict[str, Any], full: bool
) -> list[Any]:
    """The upsert's RETURNING rows. On PostgreSQL + psycopg the compiled SQL runs on the
    DBAPI cursor (`persistence.compiled`): psycopg already returns the columns' Python
    values, and SQLAlchemy's per-execution machinery would cost more CPU than the insert."""
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        row_type = _ReturnedFull if full else _Returned
        return [row_type(*row) for row in fetch_rows(connection, statement, parameters)]
    return list(connection.execute(statement, parameters))


def upsert_task_execution(connection: Connection, report: TaskReport) -> UpsertResult:
    """Create or move forward one task execution; see `upsert_task_executions`."""
    return upsert_task_executions(connection, [report])[0]


def upsert_task_execution_record(
    connection: Connection, report: TaskReport
) -> tuple[UpsertResult, TaskExecutionRecord]:
    """`upsert_task_execution`, and the record as it stands afterwards (every column).

    The record comes back from the upsert's own RETURNING, so answering with it costs no
    second read; the lean `upsert_task_executions` (the recorder's) does not carry input
    and output back."""
    [(result, row)] = _upsert(connection, [report], full=True)
    values = list(row)
    values[_FULL_STATUS_POSITION] = ExecutionStatus(values[_FULL_STATUS_POSITION])
    return result, TaskExecutionRecord(*values)


def upsert_task_executions(
    connection: Connection, reports: Sequence[TaskReport]
) -> list[UpsertResult]:
    """Apply many reports, in order, in as few statements as the key repeats allow.

    Returns one result per report, in the order given. Raises `UnknownFlowExecution` when a
    report names a flow execution that does not exist (or that row-level security hides);
    the caller's transaction then writes nothing.
    """
    return [result for result, _ in _upsert(connection, reports, full=False)]


def _upsert(
    connection: Connection, reports: Sequence[TaskReport], full: bool
) -> list[tuple[UpsertResult, Any]]:
    """Each report's result with the record's row (`_RETURNED` or, if `full`, every column)."""
    results: list[tuple[UpsertResult, Any] | None] = [None] * len(reports)
    dialect = connection.dialect.name
    started = utcnow()
    statements = 0
    for wave in _waves(reports):
        for chunk in _chunks(wave, _CHUNK_ROWS.get(dialect, 200)):
            # A row's updated_at equals this statement's own timestamp exactly when this
            # statement moved it, which tells a move from a gap-filling no-op.
            written_at = started + dt.timedelta(microseconds=statements)
            statements += 1
            statement, parameters = _prepare(
                connection, [reports[i] for i in chunk], written_at, full
            )
            returned = {_key_of(row): row for row in _run(connection, statement, parameters, full)}
            moved = {key for key, row in returned.items() if row.updated_at == written_at}
            missing = [reports[i].key for i in chunk if reports[i].key not in returned]
            current = {**returned, **_fetch_current(connection, missing, full)}
            for i in chunk:
                report = reports[i]
                row = current.get(report.key)
                if row is not None and report.key in moved:
                    outcome = UpsertOutcome.CREATED if row.version == 1 else UpsertOutcome.UPDATED
                elif row is not None:
                    outcome = (
                        UpsertOutcome.UNCHANGED
                        if row.status == report.status
                        else UpsertOutcome.REFUSED
                    )
                else:
                    _raise_for_missing(connection, report)
                results[i] = (_result(outcome, report, row), row)
    return [result for result in results if result is not None]


def _waves(reports: Sequence[TaskReport]) -> Iterator[list[int]]:
    """Split report positions so no statement touches one key twice (ON CONFLICT forbids it),
    keeping each key's reports in their given order.

    Each wave is sorted by key, and the statement locks rows in that order: concurrent
    batches then take their row locks in one global order and cannot deadlock. (A later
    wave only revisits keys the first one has already locked.)"""
    seen: dict[tuple[uuid.UUID, str, int], int] = {}
    waves: list[list[int]] = []
    for position, report in enumerate(reports):
        wave = seen.get(report.key, -1) + 1
        seen[report.key] = wave
        if wave == len(waves):
            waves.append([])
        waves[wave].append(position)
    for wave_positions in waves:
        wave_positions.sort(key=lambda position: reports[position].key)
    yield from waves


def _chunks(positions: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(positions), size):
        yield positions[start : start + size]


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
        report.attempt,
        report.worker,
        report.at if status is ExecutionStatus.QUEUED else None,
        report.at if status is ExecutionStatus.RUNNING else None,
        report.at if status.is_terminal else None,
        written_at,
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


def _prepare(
    connection: Connection, reports: list[TaskReport], written_at: Any, full: bool = False
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
    if dialect == "postgresql":
        columns = [
            column(name, postgresql.JSON() if name in _JSON_COLUMNS else type_)
            for name, type_ in _SOURCE_COLUMNS
        ]
        document = cast(bindparam("reports", type_=Text()), postgresql.JSON())
        return (
            func.json_to_recordset(document)
            .table_valued(*columns, column("position", Integer()), name="reports")
            .render_derived(name="r", with_types=True)
        )
    # SQLite has no column aliases on VALUES; a UNION ALL of one-row SELECTs does the same.
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
    """The upsert for `size` report rows (PostgreSQL: any number; pass 0), returning
    `_RETURNED` or, if `full`, every column."""
    source = _source(dialect, size)
    # On PostgreSQL the record set is typed already; JSON arrives as json and is cast to
    # JSONB here. (In SQLite a cast would change the stored affinity.)
    src = SimpleNamespace(
        **{
            name: cast(source.c[name], type_)
            if dialect == "postgresql" and name in _JSON_COLUMNS
            else source.c[name]
            for name, type_ in _SOURCE_COLUMNS
        }
    )
    proposed: Select[Any] = select(
        src.id,
        _fe.c.organization_id,
        src.flow_execution_id,
        src.task_name,
        src.task_execution_idx,
        src.status,
        src.input,
        src.output,
        src.error,
        src.modified_by,
        src.celery_task_id,
        func.coalesce(src.attempt, 0),
        src.worker,
        src.queued_at,
        src.started_at,
        src.finished_at,
        src.written_at,
        src.written_at,
        literal(1, Integer()),
    ).join_from(
        source,
        _fe,
        and_(
            _fe.c.id == src.flow_execution_id,
            # a flow execution of a stored flow takes only the task names of its flow
            or_(
                _fe.c.flow_id.is_(None),
                exists().where(_ft.c.flow_id == _fe.c.flow_id, _ft.c.task_name == src.task_name),
            ),
        ),
    )
    if dialect == "sqlite":
        proposed = proposed.where(true())  # SQLite needs a WHERE before ON CONFLICT
    else:
        proposed = proposed.order_by(source.c.position)  # lock rows in key order
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_te).from_select(
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
    new, current = statement.excluded, _te.c
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
                func.coalesce(new.input, current.input), func.coalesce(current.input, new.input)
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
                func.coalesce(new.worker, current.worker), func.coalesce(current.worker, new.worker)
            ),
            "queued_at": func.coalesce(current.queued_at, new.queued_at),
            "started_at": func.coalesce(current.started_at, new.started_at),
            "finished_at": on_move(
                func.coalesce(new.finished_at, current.finished_at), current.finished_at
            ),
            "updated_at": on_move(new.updated_at, current.updated_at),
            "version": on_move(current.version + 1, current.version),
        },
        where=or_(
            moves,
            and_(current.queued_at.is_(None), new.queued_at.is_not(None)),
            and_(current.started_at.is_(None), new.started_at.is_not(None)),
            and_(current.input.is_(None), new.input.is_not(None)),
        ),
    ).returning(*(_RETURNED_FULL if full else _RETURNED))


def transition_guard(current: Any, requested: Any, dialect: str = "sqlite") -> ColumnElement[bool]:
    """SQL truth of `persistence.status.can_transition(current, requested)`."""
    move = current + literal_column("'>'", String()) + requested
    if dialect == "postgresql":
        # one array parameter, however often the statement repeats the guard (every SET
        # expression does): the SQL text stays short
        legal = bindparam(
            "legal_moves", allowed_transition_pairs(), type_=postgresql.ARRAY(String())
        )
        any_legal: ColumnElement[bool] = move == func.any(legal)
        return any_legal
    # The legal moves are constants of the code, written into the SQL as literals: a
    # statement that never changes text is parsed, cached and prepared once.
    pairs = [literal_column(f"'{pair}'", String()) for pair in allowed_transition_pairs()]
    moves: ColumnElement[bool] = move.in_(pairs)
    return moves


def _raise_for_missing(connection: Connection, report: TaskReport) -> NoReturn:
    """Why the statement wrote nothing for `report` and no record holds its key."""
    flow_id = connection.execute(
        select(_fe.c.flow_id).where(_fe.c.id == report.flow_execution_id)
    ).first()
    if flow_id is None:
        raise UnknownFlowExecution(
            f"flow execution {report.flow_execution_id} does not exist "
            "(or belongs to another organization); create it first"
        )
    raise TaskNotInFlow(
        f"task_name {report.task_name!r} is not a task of the flow of flow execution "
        f"{report.flow_execution_id}; it must match a task name in the flow's task list "
        "(names are case-sensitive)"
    )


def _fetch_current(
    connection: Connection, keys: Iterable[tuple[uuid.UUID, str, int]], full: bool = False
) -> dict[tuple[uuid.UUID, str, int], Any]:
    keys = list(keys)
    if not keys:
        return {}
    rows = connection.execute(_CURRENT_FULL if full else _CURRENT, {"keys": keys})
    return {_key_of(row): row for row in rows}


# one statement for any number of keys: the IN list is expanded at execution time
_CURRENT = select(*_RETURNED).where(
    tuple_(*(_te.c[name] for name in KEY_COLUMNS)).in_(bindparam("keys", expanding=True))
)
_CURRENT_FULL = select(*_RETURNED_FULL).where(
    tuple_(*(_te.c[name] for name in KEY_COLUMNS)).in_(bindparam("keys", expanding=True))
)


def _key_of(row: Any) -> tuple[uuid.UUID, str, int]:
    return (row.flow_execution_id, row.task_name, row.task_execution_idx)


def _result(outcome: UpsertOutcome, report: TaskReport, row: Any) -> UpsertResult:
    return UpsertResult(
        outcome=outcome,
        report=report,
        task_execution_id=row.id,
        organization_id=row.organization_id,
        status=ExecutionStatus(row.status),
        version=row.version,
        attempt=row.attempt,
        updated_at=row.updated_at,
    )


__all__ = [
    "transition_guard",
    "upsert_task_execution",
    "upsert_task_execution_record",
    "upsert_task_executions",
]
