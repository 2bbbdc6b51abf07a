"""The one way to write a task execution: an atomic, guarded, batched upsert.

Every report becomes part of a single statement

    INSERT INTO task_executions (...)
    SELECT reports.*, flow_executions.organization_id
    FROM <reports> JOIN flow_executions ON flow_executions.id = reports.flow_execution_id
    ON CONFLICT (flow_execution_id, task_name, task_execution_idx) DO UPDATE SET ...
    WHERE task_executions.status || '>' || excluded.status IN (<legal moves>)
    RETURNING ...

so the database decides, under the row lock, whether a report moves the record forward. A
report the guard refuses, or one repeating the current status, returns no row; one more
query then tells the caller the current status. The organization always comes from the
flow execution row, never from the reporter, and the status history is appended by a
trigger (`persistence/ddl.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    String,
    Uuid,
    and_,
    case,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    values,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnElement, FromClause

from persistence.errors import UnknownFlowExecution
from persistence.models import Base, FlowExecution, JSONValue, TaskExecution, UTCDateTime
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult, utcnow
from persistence.status import ExecutionStatus, allowed_transition_pairs

KEY_COLUMNS = ("flow_execution_id", "task_name", "task_execution_idx")

_te = Base.metadata.tables[TaskExecution.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]

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

# Bound parameters per statement stay well under PostgreSQL's 65,535 and SQLite's limits
# (SQLite also caps a compound SELECT at 500 terms).
_CHUNK_ROWS = {"postgresql": 1000, "sqlite": 200}

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


def upsert_task_execution(connection: Connection, report: TaskReport) -> UpsertResult:
    """Create or move forward one task execution; see `upsert_task_executions`."""
    return upsert_task_executions(connection, [report])[0]


def upsert_task_executions(
    connection: Connection, reports: Sequence[TaskReport]
) -> list[UpsertResult]:
    """Apply many reports, in order, in as few statements as the key repeats allow.

    Returns one result per report, in the order given. Raises `UnknownFlowExecution` when a
    report names a flow execution that does not exist (or that row-level security hides);
    the caller's transaction then writes nothing.
    """
    results: list[UpsertResult | None] = [None] * len(reports)
    dialect = connection.dialect.name
    written_at = utcnow()
    for wave in _waves(reports):
        for chunk in _chunks(wave, _CHUNK_ROWS.get(dialect, 200)):
            statement = _upsert_statement(dialect, [reports[i] for i in chunk], written_at)
            returned = {_key_of(row): row for row in connection.execute(statement)}
            not_returned = [i for i in chunk if reports[i].key not in returned]
            current = _fetch_current(connection, [reports[i].key for i in not_returned])
            for i in chunk:
                report = reports[i]
                if report.key in returned:
                    row = returned[report.key]
                    outcome = UpsertOutcome.CREATED if row.version == 1 else UpsertOutcome.UPDATED
                elif report.key in current:
                    row = current[report.key]
                    outcome = (
                        UpsertOutcome.UNCHANGED
                        if row.status == report.status
                        else UpsertOutcome.REFUSED
                    )
                else:
                    raise UnknownFlowExecution(
                        f"flow execution {report.flow_execution_id} does not exist "
                        "(or belongs to another organization); create it first"
                    )
                results[i] = _result(outcome, report, row)
    return [result for result in results if result is not None]


def _waves(reports: Sequence[TaskReport]) -> Iterator[list[int]]:
    """Split report positions so no statement touches one key twice (ON CONFLICT forbids it),
    keeping each key's reports in their given order."""
    seen: dict[tuple[uuid.UUID, str, int], int] = {}
    waves: list[list[int]] = []
    for position, report in enumerate(reports):
        wave = seen.get(report.key, -1) + 1
        seen[report.key] = wave
        if wave == len(waves):
            waves.append([])
        waves[wave].append(position)
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


def _source(dialect: str, rows: list[tuple[Any, ...]]) -> FromClause:
    if dialect == "postgresql":
        columns = [column(name, type_) for name, type_ in _SOURCE_COLUMNS]
        return values(*columns, name="reports").data(rows)
    # SQLite has no column aliases on VALUES; a UNION ALL of one-row SELECTs does the same.
    selects = [
        select(
            *(
                literal(value, type_).label(name)
                for (name, type_), value in zip(_SOURCE_COLUMNS, row, strict=True)
            )
        )
        for row in rows
    ]
    if len(selects) == 1:
        return selects[0].subquery("reports")
    return union_all(*selects).subquery("reports")


def _upsert_statement(dialect: str, reports: list[TaskReport], written_at: Any) -> Any:
    source = _source(dialect, [_source_row(r, written_at) for r in reports])
    # PostgreSQL infers a VALUES column's type from its first row, and a NULL there would
    # make it text: cast explicitly. (In SQLite a cast would change the stored affinity.)
    src = SimpleNamespace(
        **{
            name: cast(source.c[name], type_) if dialect == "postgresql" else source.c[name]
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
    ).join_from(source, _fe, _fe.c.id == src.flow_execution_id)
    if dialect == "sqlite":
        proposed = proposed.where(true())  # SQLite needs a WHERE before ON CONFLICT
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
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={
            "status": new.status,
            "input": func.coalesce(new.input, _te.c.input),
            "output": func.coalesce(new.output, _te.c.output),
            "error": func.coalesce(new.error, _te.c.error),
            "modified_by": new.modified_by,
            "celery_task_id": func.coalesce(new.celery_task_id, _te.c.celery_task_id),
            "attempt": case((new.attempt > _te.c.attempt, new.attempt), else_=_te.c.attempt),
            "worker": func.coalesce(new.worker, _te.c.worker),
            "queued_at": func.coalesce(_te.c.queued_at, new.queued_at),
            "started_at": func.coalesce(_te.c.started_at, new.started_at),
            "finished_at": func.coalesce(new.finished_at, _te.c.finished_at),
            "updated_at": new.updated_at,
            "version": _te.c.version + 1,
        },
        where=transition_guard(_te.c.status, new.status),
    ).returning(*_RETURNED)


def transition_guard(current: Any, requested: Any) -> ColumnElement[bool]:
    """SQL truth of `persistence.status.can_transition(current, requested)`."""
    moves: ColumnElement[bool] = (current + literal(">", String()) + requested).in_(
        allowed_transition_pairs()
    )
    return moves


def _fetch_current(
    connection: Connection, keys: Iterable[tuple[uuid.UUID, str, int]]
) -> dict[tuple[uuid.UUID, str, int], Any]:
    keys = list(keys)
    if not keys:
        return {}
    conditions = [
        and_(
            _te.c.flow_execution_id == flow_execution_id,
            _te.c.task_name == task_name,
            _te.c.task_execution_idx == task_execution_idx,
        )
        for flow_execution_id, task_name, task_execution_idx in keys
    ]
    rows = connection.execute(select(*_RETURNED).where(or_(*conditions)))
    return {_key_of(row): row for row in rows}


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


__all__ = ["transition_guard", "upsert_task_execution", "upsert_task_executions"]
