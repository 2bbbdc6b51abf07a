"""The single-report session function (`persistence.upsert_function`) against the rules.

The function's guard is its own (a look in the statuses the report's status may follow,
not the batch's `current>requested` among all moves), so here it is held to
`persistence.status.can_transition` for every pair of statuses, in both of its variants,
and to the batch's answers.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from persistence.database import autocommit, transaction
from persistence.models import TaskExecution
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult
from persistence.status import ExecutionStatus, can_transition
from persistence.upsert import (
    upsert_task_execution,
    upsert_task_execution_record,
    upsert_task_executions,
)
from tests.persistence.helpers import make_flow_execution

S = ExecutionStatus
PAIRS = [(current, requested) for current in S for requested in S]


def _expected(current: S, requested: S) -> tuple[UpsertOutcome, S]:
    if requested == current:
        return UpsertOutcome.UNCHANGED, current
    if can_transition(current, requested):
        return UpsertOutcome.UPDATED, requested
    return UpsertOutcome.REFUSED, current


@pytest.mark.postgres
@pytest.mark.parametrize("full", [False, True], ids=["lean", "full"])
def test_every_pair_of_statuses_through_the_session_function(pg_engine: Engine, full: bool) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    _, batch_flow_execution_id = make_flow_execution(pg_engine)
    single: list[UpsertResult] = []
    with autocommit(pg_engine) as connection:
        for idx, pair in enumerate(PAIRS):
            for status in pair:
                report = TaskReport(flow_execution_id, "pair", idx, status)
                if full:
                    result, record = upsert_task_execution_record(
                        connection, report, organization_id=organization_id
                    )
                    assert (record.status, record.version) == (result.status, result.version)
                else:
                    result = upsert_task_execution(
                        connection, report, organization_id=organization_id
                    )
                single.append(result)
    with transaction(pg_engine, organization_id) as connection:
        batch = upsert_task_executions(
            connection,
            [
                TaskReport(batch_flow_execution_id, "pair", idx, status)
                for idx, pair in enumerate(PAIRS)
                for status in pair
            ],
        )
    for (current, requested), created, second in zip(
        PAIRS, single[0::2], single[1::2], strict=True
    ):
        assert created.outcome is UpsertOutcome.CREATED
        assert (second.outcome, second.status) == _expected(current, requested), (
            current,
            requested,
        )
        assert second.task_execution_id == created.task_execution_id
    assert [(r.outcome, r.status, r.version, r.attempt) for r in single] == [
        (r.outcome, r.status, r.version, r.attempt) for r in batch
    ]


@pytest.mark.postgres
def test_the_lean_answer_is_the_record_as_it_stands(pg_engine: Engine) -> None:
    """The lean variant answers without the key; what it answers is the stored record."""
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with autocommit(pg_engine) as connection:
        results = [
            upsert_task_execution(
                connection,
                TaskReport(flow_execution_id, "load", 3, status, at=started, attempt=attempt),
                organization_id=organization_id,
            )
            for status, attempt in [(S.RUNNING, 2), (S.QUEUED, 1), (S.COMPLETED, 2)]
        ]
    with transaction(pg_engine) as connection:
        row = connection.execute(select(TaskExecution.__table__)).one()
    assert [r.outcome for r in results] == [
        UpsertOutcome.CREATED,
        UpsertOutcome.REFUSED,
        UpsertOutcome.UPDATED,
    ]
    last = results[-1]
    assert (last.task_execution_id, last.organization_id) == (row.id, row.organization_id)
    assert (last.status, last.version, last.attempt) == (row.status, row.version, row.attempt)
    assert (last.updated_at, last.started_at) == (row.updated_at, started)
    # the refused late `queued` still filled when it was queued
    assert results[1].status is S.RUNNING
    assert row.queued_at == started
