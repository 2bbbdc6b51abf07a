"""The transition rules, checked against a plain model of the state machine.

For any sequence of reports (over a few keys, applied one at a time or in batches that may
name one key several times), the database's outcomes, statuses, versions and history are
the model's. SQLite runs many examples (fast); PostgreSQL fewer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from persistence.database import transaction
from persistence.errors import InvalidReport
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport, UpsertOutcome
from persistence.status import (
    REPORTABLE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    ExecutionStatus,
    can_transition,
)
from persistence.upsert import upsert_task_execution, upsert_task_executions

S = ExecutionStatus
STATUSES = list(ExecutionStatus)
KEYS = [("extract", 0), ("extract", 1), ("load", 0)]


# --- the model -----------------------------------------------------------------------------


@dataclass
class Record:
    status: ExecutionStatus
    version: int = 1
    history: list[tuple[ExecutionStatus | None, ExecutionStatus]] = field(default_factory=list)


def model_apply(
    records: dict[int, Record], key: int, status: ExecutionStatus
) -> tuple[UpsertOutcome, ExecutionStatus, int]:
    """The rules in plain Python: (outcome, status afterwards, version afterwards)."""
    record = records.get(key)
    if record is None:
        records[key] = Record(status, history=[(None, status)])
        return UpsertOutcome.CREATED, status, 1
    if status == record.status:
        return UpsertOutcome.UNCHANGED, status, record.version
    if can_transition(record.status, status):
        record.history.append((record.status, status))
        record.status, record.version = status, record.version + 1
        return UpsertOutcome.UPDATED, status, record.version
    return UpsertOutcome.REFUSED, record.status, record.version


def test_the_transition_table_is_the_documented_one() -> None:
    """The table in docs/persistence.md, spelled out (the model above relies on it)."""
    expected = {
        S.QUEUED: {S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.DELETED},
        S.RUNNING: {S.COMPLETED, S.FAILED, S.CANCELLED, S.DELETED},
        S.COMPLETED: {S.STALE, S.DELETED},
        S.FAILED: {S.STALE, S.DELETED},
        S.CANCELLED: {S.DELETED},
        S.STALE: {S.DELETED},
        S.DELETED: set(),
    }
    assert {status: set(targets) for status, targets in TRANSITIONS.items()} == expected
    assert {S.COMPLETED, S.FAILED, S.CANCELLED} == TERMINAL_STATUSES
    assert {S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED} == REPORTABLE_STATUSES


# --- applying plans to the database ---------------------------------------------------------


@dataclass
class Step:
    """One transaction: a single upsert, or one batch call."""

    reports: list[tuple[int, ExecutionStatus]]
    single: bool


STEPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(range(len(KEYS))), st.sampled_from(STATUSES)).map(
            lambda report: Step([report], single=True)
        ),
        st.lists(
            st.tuples(st.sampled_from(range(len(KEYS))), st.sampled_from(STATUSES)),
            min_size=1,
            max_size=8,
        ).map(lambda reports: Step(reports, single=False)),
    ),
    min_size=1,
    max_size=8,
)


def new_flow_execution(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "properties")
        return organization_id, create_flow_execution(connection, organization_id)


def check_against_model(engine: Engine, steps: list[Step]) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    records: dict[int, Record] = {}
    for step in steps:
        reports = [
            TaskReport(flow_execution_id, *KEYS[key], status=status) for key, status in step.reports
        ]
        with transaction(engine, organization_id) as connection:
            if step.single:
                results = [upsert_task_execution(connection, reports[0])]
            else:
                results = upsert_task_executions(connection, reports)
        expected = [model_apply(records, key, status) for key, status in step.reports]
        assert [(r.outcome, r.status, r.version) for r in results] == expected, step
        assert [r.report for r in results] == reports

    with transaction(engine) as connection:
        rows = {
            (row.task_name, row.task_execution_idx): row
            for row in connection.execute(
                select(TaskExecution.__table__).where(
                    TaskExecution.flow_execution_id == flow_execution_id
                )
            )
        }
        events: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for event in connection.execute(
            select(TaskExecutionEvent.__table__)
            .join(TaskExecution.__table__)
            .where(TaskExecution.flow_execution_id == flow_execution_id)
            .order_by(TaskExecutionEvent.id)
        ):
            events[event.task_execution_id].append(event)
    assert set(rows) == {KEYS[key] for key in records}
    for key, record in records.items():
        row = rows[KEYS[key]]
        assert (row.status, row.version) == (record.status, record.version)
        history = events[row.id]
        assert [(e.from_status, e.to_status) for e in history] == record.history
        assert [e.version for e in history] == list(range(1, record.version + 1))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_sqlite_follows_the_model(sqlite_engine: Engine, steps: list[Step]) -> None:
    check_against_model(sqlite_engine, steps)


@pytest.mark.postgres
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_postgres_follows_the_model(postgres_engine: Engine, steps: list[Step]) -> None:
    check_against_model(postgres_engine, steps)


def test_every_pair_of_statuses(engine: Engine) -> None:
    """All 49 (current, requested) pairs at once, in one batch: the SQL guard is
    exactly `can_transition`."""
    organization_id, flow_execution_id = new_flow_execution(engine)
    pairs = [(current, requested) for current in STATUSES for requested in STATUSES]
    reports = [
        TaskReport(flow_execution_id, "pair", idx, status)
        for idx, pair in enumerate(pairs)
        for status in pair
    ]
    with transaction(engine, organization_id) as connection:
        results = upsert_task_executions(connection, reports)
    for (current, requested), created, second in zip(
        pairs, results[0::2], results[1::2], strict=True
    ):
        assert created.outcome is UpsertOutcome.CREATED
        if requested == current:
            assert (second.outcome, second.status) == (UpsertOutcome.UNCHANGED, current)
        elif can_transition(current, requested):
            assert (second.outcome, second.status) == (UpsertOutcome.UPDATED, requested)
        else:
            assert (second.outcome, second.status) == (UpsertOutcome.REFUSED, current)


# --- odd input: a clear error before the database, or a stored record -----------------------

ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.characters(codec=None, categories=["Cs"]),  # unpaired surrogates
        st.just("\x00"),
    ),
    max_size=260,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    task_name=st.one_of(ANY_TEXT, st.sampled_from(["", "x" * 200, "x" * 201, "é" * 200])),
    idx=st.one_of(st.integers(), st.sampled_from([-1, 0, 2**31 - 1, 2**31])),
    modified_by=st.one_of(ANY_TEXT, st.none()),
    worker=st.one_of(st.none(), ANY_TEXT),
    celery_task_id=st.one_of(st.none(), ANY_TEXT),
    attempt=st.one_of(st.none(), st.integers(), st.just(True)),
)
def test_odd_reports_fail_clearly_or_are_stored(
    engine: Engine,
    task_name: str,
    idx: int,
    modified_by: Any,
    worker: Any,
    celery_task_id: Any,
    attempt: Any,
) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    try:
        report = TaskReport(
            flow_execution_id,
            task_name,
            idx,
            S.QUEUED,
            modified_by=modified_by,
            worker=worker,
            celery_task_id=celery_task_id,
            attempt=attempt,
        )
    except InvalidReport:
        return
    with transaction(engine, organization_id) as connection:
        result = upsert_task_execution(connection, report)
        row = connection.execute(
            select(TaskExecution.__table__).where(TaskExecution.id == result.task_execution_id)
        ).one()
    assert result.outcome is UpsertOutcome.CREATED
    assert (row.task_name, row.task_execution_idx) == (task_name, idx)
    assert (row.modified_by, row.worker, row.celery_task_id) == (
        modified_by,
        worker,
        celery_task_id,
    )
    assert row.attempt == (attempt or 0)


@pytest.mark.parametrize(
    "changes",
    [
        {"task_name": "a\x00b"},
        {"task_name": "caf\udce9"},
        {"task_execution_idx": 2**31},
        {"modified_by": ""},
        {"modified_by": None},
        {"modified_by": "m" * 201},
        {"worker": "w" * 256},
        {"celery_task_id": "c\x00"},
        {"attempt": -1},
        {"attempt": 2**31},
        {"attempt": True},
        {"at": dt.datetime(2026, 1, 1)},  # naive
    ],
)
def test_values_the_columns_cannot_hold_are_refused_before_the_database(
    changes: dict[str, Any],
) -> None:
    """Each of these once reached the database and failed there (DataError, IntegrityError,
    UnicodeEncodeError), taking the whole batch with it."""
    fields: dict[str, Any] = {
        "flow_execution_id": uuid.uuid4(),
        "task_name": "t",
        "task_execution_idx": 0,
        "status": S.QUEUED,
        **changes,
    }
    with pytest.raises(InvalidReport):
        TaskReport(**fields)
