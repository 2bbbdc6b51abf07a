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
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    select,
    tuple_,
)

from persistence.compiled import fetch_rows
from persistence.database import set_organization
from persistence.errors import TaskNotInFlow, UnknownFlowExecution
from persistence.records import TaskExecutionRecord
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult, utcnow
from persistence.status import ExecutionStatus
from persistence.upsert_function import call_upsert_function, upsert_function_session
from persistence.upsert_statement import (
    CHUNK_ROWS,
    FULL_STATUS_POSITION,
    KEY_COLUMNS,
    RETURNED,
    RETURNED_FULL,
    ReturnedFullRow,
    ReturnedRow,
    flow_executions_table,
    prepare_upsert,
    task_executions_table,
    transition_guard,
)


def _run(
    connection: Connection, statement: Any, parameters: dict[str, Any], full: bool
) -> list[Any]:
    """The upsert's RETURNING rows. On PostgreSQL + psycopg the compiled SQL runs on the
    DBAPI cursor (`persistence.compiled`): psycopg already returns the columns' Python
    values, and SQLAlchemy's per-execution machinery would cost more CPU than the insert."""
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        row_type = ReturnedFullRow if full else ReturnedRow
        return [row_type(*row) for row in fetch_rows(connection, statement, parameters)]
    return list(connection.execute(statement, parameters))


def upsert_task_execution(
    connection: Connection, report: TaskReport, *, organization_id: uuid.UUID | None = None
) -> UpsertResult:
    """Create or move forward one task execution; see `upsert_task_executions`.

    With `organization_id`, the report is written only if its flow execution belongs to that
    organization (else `UnknownFlowExecution`, nothing written), and on PostgreSQL the
    statement runs scoped to it (row-level security), as `transaction(engine, org)` does.
    On an autocommit connection of PostgreSQL (`persistence.database.autocommit`) the whole
    report, whatever its outcome, is one round trip (`persistence.upsert_function`)."""
    return _upsert_one(connection, report, organization_id, full=False)[0]


def upsert_task_execution_record(
    connection: Connection, report: TaskReport, *, organization_id: uuid.UUID | None = None
) -> tuple[UpsertResult, TaskExecutionRecord]:
    """`upsert_task_execution`, and the record as it stands afterwards (every column).

    The record comes back from the upsert's own RETURNING, so answering with it costs no
    second read; the lean `upsert_task_executions` (the recorder's) does not carry input
    and output back."""
    result, row = _upsert_one(connection, report, organization_id, full=True)
    return result, record_of(row)


def record_of(row: Any) -> TaskExecutionRecord:
    """The record of a full row (`upsert_statement.RETURNED_FULL`)."""
    values = list(row)
    values[FULL_STATUS_POSITION] = ExecutionStatus(values[FULL_STATUS_POSITION])
    return TaskExecutionRecord(*values)


def _upsert_one(
    connection: Connection, report: TaskReport, organization_id: uuid.UUID | None, full: bool
) -> tuple[UpsertResult, Any]:
    session = upsert_function_session(connection, full)
    if session is not None:
        written_at = utcnow()
        row, flow_known = call_upsert_function(session, report, written_at, organization_id, full)
        return result_of_function(report, written_at, row, flow_known), row
    if organization_id is not None:
        set_organization(connection, organization_id)
        owner = connection.execute(
            select(flow_executions_table.c.organization_id).where(
                flow_executions_table.c.id == report.flow_execution_id
            )
        ).scalar()
        if owner != organization_id:
            raise _missing_error(report, flow_known=False)
    return _upsert(connection, [report], full)[0]


def result_of_function(
    report: TaskReport, written_at: dt.datetime, row: Any | None, flow_known: bool
) -> UpsertResult:
    """What became of `report`, from the session function's answer
    (`persistence.upsert_function`) to the call stamped `written_at`."""
    if row is None:
        raise _missing_error(report, flow_known)
    return _result(_outcome(report, row, written_at), report, row)


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
    """Each report's result with the record's row (`RETURNED` or, if `full`, every column)."""
    results: list[tuple[UpsertResult, Any] | None] = [None] * len(reports)
    dialect = connection.dialect.name
    started = utcnow()
    statements = 0
    for wave in _waves(reports):
        for chunk in _chunks(wave, CHUNK_ROWS.get(dialect, 200)):
            # A row's updated_at equals this statement's own timestamp exactly when this
            # statement moved it, which tells a move from a gap-filling no-op.
            written_at = started + dt.timedelta(microseconds=statements)
            statements += 1
            statement, parameters = prepare_upsert(
                connection, [reports[i] for i in chunk], written_at, full
            )
            returned = {_key_of(row): row for row in _run(connection, statement, parameters, full)}
            missing = [reports[i].key for i in chunk if reports[i].key not in returned]
            current = {**returned, **_fetch_current(connection, missing, full)}
            for i in chunk:
                report = reports[i]
                row = current.get(report.key)
                if row is None:
                    raise _missing_error(report, _flow_execution_exists(connection, report))
                outcome = _outcome(report, row, written_at)
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


def _outcome(report: TaskReport, row: Any, written_at: dt.datetime) -> UpsertOutcome:
    """What the statement stamped `written_at` did to the record `row` (as it stands after
    it) for `report`: a row it moved carries that time as updated_at, and one it created
    as created_at too."""
    if row.updated_at == written_at:
        return UpsertOutcome.CREATED if row.created_at == written_at else UpsertOutcome.UPDATED
    return UpsertOutcome.UNCHANGED if row.status == report.status else UpsertOutcome.REFUSED


def _flow_execution_exists(connection: Connection, report: TaskReport) -> bool:
    found = connection.execute(
        select(flow_executions_table.c.id).where(
            flow_executions_table.c.id == report.flow_execution_id
        )
    ).first()
    return found is not None


def _missing_error(report: TaskReport, flow_known: bool) -> Exception:
    """Why the statement wrote nothing for `report` and no record holds its key."""
    if not flow_known:
        return UnknownFlowExecution(
            f"flow execution {report.flow_execution_id} does not exist "
            "(or belongs to another organization); create it first"
        )
    return TaskNotInFlow(
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
_CURRENT = select(*RETURNED).where(
    tuple_(*(task_executions_table.c[name] for name in KEY_COLUMNS)).in_(
        bindparam("keys", expanding=True)
    )
)
_CURRENT_FULL = select(*RETURNED_FULL).where(
    tuple_(*(task_executions_table.c[name] for name in KEY_COLUMNS)).in_(
        bindparam("keys", expanding=True)
    )
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
        started_at=row.started_at,
    )


__all__ = [
    "KEY_COLUMNS",
    "transition_guard",
    "upsert_task_execution",
    "upsert_task_execution_record",
    "upsert_task_executions",
]
