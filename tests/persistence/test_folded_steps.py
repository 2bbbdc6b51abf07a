"""A report that folds in the steps it passed (`TaskReport.queued_at` / `started_at`): one
row write, and the record's version and history read as if each step had been written."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from persistence.database import transaction
from persistence.errors import InvalidReport
from persistence.models import TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport, UpsertOutcome
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_execution, upsert_task_executions
from tests.persistence.helpers import make_flow_execution

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
QUEUED_AT, STARTED_AT, FINISHED_AT = T0, T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=3)


def events(engine: Engine) -> list[tuple[str | None, str, int, dt.datetime]]:
    with transaction(engine) as connection:
        rows = connection.execute(
            select(
                TaskExecutionEvent.from_status,
                TaskExecutionEvent.to_status,
                TaskExecutionEvent.version,
                TaskExecutionEvent.recorded_at,
            ).order_by(TaskExecutionEvent.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def record(engine: Engine) -> tuple[str, int, dt.datetime | None, dt.datetime | None]:
    with transaction(engine) as connection:
        row = connection.execute(select(TaskExecution.__table__)).one()
    return row.status, row.version, row.queued_at, row.started_at


def finished(flow_execution_id: object, **fields: object) -> TaskReport:
    return TaskReport(
        flow_execution_id,  # type: ignore[arg-type]
        "t",
        0,
        S.COMPLETED,
        at=FINISHED_AT,
        output=7,
        **fields,  # type: ignore[arg-type]
    )


def test_a_new_record_passes_queued_and_running(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    report = finished(flow_execution_id, queued_at=QUEUED_AT, started_at=STARTED_AT)
    assert report.steps == (S.QUEUED, S.RUNNING, S.COMPLETED)
    with transaction(engine, organization_id) as connection:
        result = upsert_task_execution(connection, report)
    assert (result.outcome, result.version) == (UpsertOutcome.CREATED, 3)
    assert record(engine) == ("completed", 3, QUEUED_AT, STARTED_AT)
    assert [event[:3] for event in events(engine)] == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ]
    assert [event[3] for event in events(engine)][:2] == [QUEUED_AT, STARTED_AT]


def test_a_queued_record_passes_running(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, S.QUEUED))
        result = upsert_task_execution(
            connection, finished(flow_execution_id, queued_at=QUEUED_AT, started_at=STARTED_AT)
        )
    assert (result.outcome, result.version) == (UpsertOutcome.UPDATED, 3)
    assert [event[:3] for event in events(engine)] == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ]


def test_a_running_record_only_finishes(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(
            connection,
            [
                TaskReport(flow_execution_id, "t", 0, S.QUEUED, at=QUEUED_AT),
                TaskReport(flow_execution_id, "t", 0, S.RUNNING, at=STARTED_AT),
            ],
        )
        later = STARTED_AT + dt.timedelta(seconds=1)
        result = upsert_task_execution(
            connection, finished(flow_execution_id, queued_at=later, started_at=later)
        )
    assert result.version == 3
    # what the record knew first stays: the folded-in times fill gaps only
    assert record(engine) == ("completed", 3, QUEUED_AT, STARTED_AT)
    assert [event[:3] for event in events(engine)] == [
        (None, "queued", 1),
        ("queued", "running", 2),
        ("running", "completed", 3),
    ]


def test_a_running_report_that_says_when_it_was_queued(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    report = TaskReport(flow_execution_id, "t", 0, S.RUNNING, at=STARTED_AT, queued_at=QUEUED_AT)
    with transaction(engine, organization_id) as connection:
        result = upsert_task_execution(connection, report)
    assert result.version == 2
    assert [event[:3] for event in events(engine)] == [
        (None, "queued", 1),
        ("queued", "running", 2),
    ]


def test_a_late_folded_report_is_refused_and_fills_gaps(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(connection, finished(flow_execution_id))
        result = upsert_task_execution(
            connection,
            TaskReport(flow_execution_id, "t", 0, S.RUNNING, at=STARTED_AT, queued_at=QUEUED_AT),
        )
    assert (result.outcome, result.status, result.version) == (
        UpsertOutcome.REFUSED,
        "completed",
        1,
    )
    assert record(engine) == ("completed", 1, QUEUED_AT, STARTED_AT)
    assert [event[:3] for event in events(engine)] == [(None, "completed", 1)]


def test_absorb_keeps_what_the_later_report_says() -> None:
    import uuid

    flow_execution_id = uuid.uuid4()
    queued = TaskReport(flow_execution_id, "t", 0, S.QUEUED, at=QUEUED_AT, celery_task_id="c")
    running = TaskReport(
        flow_execution_id, "t", 0, S.RUNNING, at=STARTED_AT, input=[1], worker="w", attempt=0
    )
    merged = finished(flow_execution_id).absorb(running.absorb(queued))
    assert merged.status is S.COMPLETED
    assert (merged.queued_at, merged.started_at, merged.at) == (QUEUED_AT, STARTED_AT, FINISHED_AT)
    assert (merged.input, merged.output, merged.worker) == ([1], 7, "w")
    assert (merged.celery_task_id, merged.attempt) == ("c", 0)


@pytest.mark.parametrize("name", ["queued_at", "started_at"])
def test_folded_times_must_be_aware(name: str) -> None:
    import uuid

    with pytest.raises(InvalidReport, match=name):
        TaskReport(uuid.uuid4(), "t", 0, S.COMPLETED, **{name: dt.datetime(2026, 1, 1)})  # type: ignore[arg-type]
