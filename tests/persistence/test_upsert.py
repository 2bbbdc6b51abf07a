from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, func, make_url, select, text

from persistence.database import autocommit, transaction
from persistence.errors import (
    InvalidExecutionIndex,
    InvalidStatus,
    InvalidTaskName,
    UnknownFlowExecution,
)
from persistence.models import TaskExecution, TaskExecutionEvent
from persistence.records import TaskExecutionRecord
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult
from persistence.status import ExecutionStatus as S
from persistence.upsert import (
    upsert_task_execution,
    upsert_task_execution_record,
    upsert_task_executions,
)
from tests.persistence.helpers import make_flow_execution


def count_rows(engine: Engine, model: type) -> int:
    with transaction(engine) as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def history(engine: Engine) -> list[tuple[str | None, str]]:
    with transaction(engine) as connection:
        rows = connection.execute(
            select(TaskExecutionEvent.from_status, TaskExecutionEvent.to_status).order_by(
                TaskExecutionEvent.id
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_lifecycle_creates_then_moves_forward(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        created = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "extract", 0, S.QUEUED, input={"n": 1})
        )
        running = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "extract", 0, S.RUNNING, worker="w1")
        )
        done = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "extract", 0, S.COMPLETED, output=[1])
        )
    assert [created.outcome, running.outcome, done.outcome] == [
        UpsertOutcome.CREATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.UPDATED,
    ]
    assert created.task_execution_id == done.task_execution_id
    assert created.organization_id == organization_id
    assert [created.version, running.version, done.version] == [1, 2, 3]
    with transaction(engine) as connection:
        row = connection.execute(select(TaskExecution.__table__)).one()
    assert row.status == "completed"
    assert row.input == {"n": 1}
    assert row.output == [1]
    assert row.worker == "w1"
    assert row.modified_by == "system"
    assert row.queued_at <= row.started_at <= row.finished_at
    assert history(engine) == [(None, "queued"), ("queued", "running"), ("running", "completed")]


def test_same_report_twice_changes_nothing(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    report = TaskReport(flow_execution_id, "t", 0, S.RUNNING)
    with transaction(engine, organization_id) as connection:
        first = upsert_task_execution(connection, report)
        second = upsert_task_execution(connection, report)
    assert first.outcome is UpsertOutcome.CREATED
    assert second.outcome is UpsertOutcome.UNCHANGED
    assert second.version == 1
    assert count_rows(engine, TaskExecution) == 1
    assert len(history(engine)) == 1


@pytest.mark.parametrize(
    ("current", "late"),
    [
        (S.COMPLETED, S.RUNNING),
        (S.FAILED, S.QUEUED),
        (S.CANCELLED, S.RUNNING),
        (S.RUNNING, S.QUEUED),
    ],
)
def test_backward_report_is_refused_and_names_current_status(
    engine: Engine, current: S, late: S
) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, current))
        result = upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, late))
    assert result.outcome is UpsertOutcome.REFUSED
    assert result.status is current
    assert len(history(engine)) == 1


def test_stale_and_deleted_are_allowed_from_finished(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, S.FAILED))
        stale = upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, S.STALE))
        deleted = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "t", 0, S.DELETED)
        )
        again = upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, S.RUNNING))
    assert (stale.outcome, deleted.outcome, again.outcome) == (
        UpsertOutcome.UPDATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.REFUSED,
    )


def test_forward_jump_over_a_late_running_report(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        results = upsert_task_executions(
            connection,
            [
                TaskReport(flow_execution_id, "t", 0, S.QUEUED),
                TaskReport(flow_execution_id, "t", 0, S.COMPLETED, output="ok"),
                TaskReport(flow_execution_id, "t", 0, S.RUNNING),
            ],
        )
    assert [r.outcome for r in results] == [
        UpsertOutcome.CREATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.REFUSED,
    ]
    assert results[-1].status is S.COMPLETED


def test_batch_returns_results_in_order_across_keys(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    reports = [
        TaskReport(flow_execution_id, f"task-{n % 7}", n // 7, status)
        for n in range(350)
        for status in (S.QUEUED, S.RUNNING, S.COMPLETED)
    ]
    with transaction(engine, organization_id) as connection:
        results = upsert_task_executions(connection, reports)
    assert [r.report for r in results] == reports
    assert {r.outcome for r in results[0::3]} == {UpsertOutcome.CREATED}
    assert {r.status for r in results[2::3]} == {S.COMPLETED}
    assert count_rows(engine, TaskExecution) == 350
    assert count_rows(engine, TaskExecutionEvent) == 1050


def test_unknown_flow_execution_writes_nothing(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    reports = [
        TaskReport(flow_execution_id, "t", 0, S.QUEUED),
        TaskReport(uuid.uuid4(), "t", 0, S.QUEUED),
    ]
    with pytest.raises(UnknownFlowExecution, match="does not exist"):  # noqa: SIM117
        with transaction(engine, organization_id) as connection:
            upsert_task_executions(connection, reports)
    assert count_rows(engine, TaskExecution) == 0


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"status": "done"}, InvalidStatus),
        ({"task_name": ""}, InvalidTaskName),
        ({"task_name": "x" * 201}, InvalidTaskName),
        ({"task_execution_idx": -1}, InvalidExecutionIndex),
        ({"task_execution_idx": True}, InvalidExecutionIndex),
    ],
)
def test_invalid_reports_raise_their_own_error(changes: dict[str, object], error: type) -> None:
    fields: dict[str, object] = {
        "flow_execution_id": uuid.uuid4(),
        "task_name": "t",
        "task_execution_idx": 0,
        "status": "queued",
        **changes,
    }
    with pytest.raises(error):
        TaskReport(**fields)  # type: ignore[arg-type]


def test_task_name_of_200_characters_is_accepted(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        result = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "é" * 200, 0, S.QUEUED)
        )
    assert result.outcome is UpsertOutcome.CREATED


def test_values_json_cannot_hold_are_stored_in_fallback_form(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    big = "x" * (2 * 1024 * 1024)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(
            connection,
            TaskReport(
                flow_execution_id,
                "t",
                0,
                S.COMPLETED,
                input={"when": object(), "nul": "a\x00b", "nan": float("nan")},
                output=big,
            ),
        )
        row = connection.execute(select(TaskExecution.__table__)).one()
    assert row.input["when"]["$unserializable"] == "builtins.object"
    assert row.input["nul"] == "a\ufffdb"
    assert row.input["nan"] == "NaN"
    assert row.output["$truncated"] is True
    assert row.output["size_bytes"] > 2 * 1024 * 1024


def test_refused_late_report_still_fills_what_the_record_lacks(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, S.COMPLETED))
        late = upsert_task_execution(
            connection, TaskReport(flow_execution_id, "t", 0, S.QUEUED, input={"n": 1})
        )
        row = connection.execute(select(TaskExecution.__table__)).one()
    assert late.outcome is UpsertOutcome.REFUSED
    assert late.status is S.COMPLETED
    assert late.version == 1
    assert row.status == "completed"
    assert row.input == {"n": 1}
    assert row.queued_at is not None
    assert history(engine) == [(None, "completed")]


def test_upsert_record_returns_what_a_read_returns(engine: Engine) -> None:
    """`upsert_task_execution_record` answers from RETURNING: the same record a read gives,
    for a creation, a move, a repeat (no row returned) and a refused move."""
    from persistence.queries import fetch_task_execution

    organization_id, flow_execution_id = make_flow_execution(engine)
    reports = [
        TaskReport(flow_execution_id, "load", 0, S.QUEUED, input={"rows": [1, None, "x"]}),
        TaskReport(flow_execution_id, "load", 0, S.COMPLETED, output={"ok": True}, attempt=2),
        TaskReport(flow_execution_id, "load", 0, S.COMPLETED),
        TaskReport(flow_execution_id, "load", 0, S.RUNNING, worker="late"),
    ]
    outcomes = []
    for report in reports:
        with transaction(engine, organization_id) as connection:
            result, record = upsert_task_execution_record(connection, report)
            assert record == fetch_task_execution(connection, organization_id, record.id)
        assert (record.id, record.status, record.version) == (
            result.task_execution_id,
            result.status,
            result.version,
        )
        outcomes.append(result.outcome)
    assert outcomes == [
        UpsertOutcome.CREATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.UNCHANGED,
        UpsertOutcome.REFUSED,
    ]
    assert record.input == {"rows": [1, None, "x"]}
    assert record.output == {"ok": True}
    assert isinstance(record.status, S)


def test_single_report_on_an_autocommit_connection(engine: Engine) -> None:
    """Outside a transaction each report commits on its own (on PostgreSQL through the
    session function, `persistence.upsert_function`), with the same outcomes, current
    status on refusal, versions, record and history as in a transaction."""
    from persistence.queries import fetch_task_execution

    organization_id, flow_execution_id = make_flow_execution(engine)
    statuses = [S.QUEUED, S.RUNNING, S.RUNNING, S.QUEUED, S.COMPLETED]
    results = []
    with autocommit(engine) as connection:
        for status in statuses:
            report = TaskReport(
                flow_execution_id,
                "load",
                0,
                status,
                input={"n": 1} if status is S.QUEUED else None,
                output=[2] if status is S.COMPLETED else None,
            )
            result, record = upsert_task_execution_record(
                connection, report, organization_id=organization_id
            )
            results.append(result)
            # committed already: another connection sees it
            with transaction(engine, organization_id) as reader:
                assert record == fetch_task_execution(reader, organization_id, record.id)
        again = upsert_task_execution(
            connection,
            TaskReport(flow_execution_id, "load", 0, S.COMPLETED),
            organization_id=organization_id,
        )
    assert [r.outcome for r in results] == [
        UpsertOutcome.CREATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.UNCHANGED,
        UpsertOutcome.REFUSED,
        UpsertOutcome.UPDATED,
    ]
    assert [r.status for r in results] == [S.QUEUED, S.RUNNING, S.RUNNING, S.RUNNING, S.COMPLETED]
    assert [r.version for r in results] == [1, 2, 2, 2, 3]
    assert {r.organization_id for r in results} == {organization_id}
    assert again.outcome is UpsertOutcome.UNCHANGED
    assert (record.input, record.output, record.status) == ({"n": 1}, [2], S.COMPLETED)
    assert history(engine) == [(None, "queued"), ("queued", "running"), ("running", "completed")]


@pytest.mark.parametrize("scope", ["autocommit", "transaction"])
def test_single_report_for_another_organization_writes_nothing(engine: Engine, scope: str) -> None:
    """`organization_id` is enforced even where row-level security is not (SQLite, the
    table owner): the flow execution of another organization is unknown to it."""
    _, flow_execution_id = make_flow_execution(engine, "a")
    other_organization, _ = make_flow_execution(engine, "b")
    opened = autocommit(engine) if scope == "autocommit" else transaction(engine)
    with opened as connection:
        with pytest.raises(UnknownFlowExecution):
            upsert_task_execution(
                connection,
                TaskReport(flow_execution_id, "t", 0, S.QUEUED),
                organization_id=other_organization,
            )
        with pytest.raises(UnknownFlowExecution):
            upsert_task_execution(
                connection,
                TaskReport(uuid.uuid4(), "t", 0, S.QUEUED),
                organization_id=other_organization,
            )
    assert count_rows(engine, TaskExecution) == 0
    assert history(engine) == []


def _round_trips(connection: Connection, work: Callable[[], object]) -> int:
    """How many times `work` waited for the server (ReadyForQuery messages received)."""
    import psycopg

    driver_connection = connection.connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection)
    with tempfile.TemporaryFile() as trace:
        driver_connection.pgconn.trace(trace.fileno())
        driver_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            work()
        finally:
            driver_connection.pgconn.untrace()
        trace.seek(0)
        messages = trace.read().decode().splitlines()
    return sum(1 for line in messages if line.startswith("B") and "ReadyForQuery" in line)


@pytest.mark.postgres
def test_a_single_report_is_one_round_trip_on_postgresql(pg_engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    with autocommit(pg_engine) as connection:

        def report(idx: int, status: S) -> UpsertResult:
            return upsert_task_execution(
                connection,
                TaskReport(flow_execution_id, "t", idx, status),
                organization_id=organization_id,
            )

        for idx in range(6):  # psycopg prepares a statement on its fifth execution
            report(idx, S.QUEUED)
        assert _round_trips(connection, lambda: report(10, S.QUEUED)) == 1
        assert _round_trips(connection, lambda: report(10, S.RUNNING)) == 1
        refused: list[UpsertResult] = []
        assert _round_trips(connection, lambda: refused.append(report(10, S.QUEUED))) == 1
        assert (refused[0].outcome, refused[0].status) == (UpsertOutcome.REFUSED, S.RUNNING)
        unknown = TaskReport(uuid.uuid4(), "t", 0, S.QUEUED)
        with pytest.raises(UnknownFlowExecution):
            _round_trips(connection, lambda: upsert_task_execution(connection, unknown))


@pytest.mark.postgres
def test_the_session_function_is_never_created_inside_a_transaction(pg_engine: Engine) -> None:
    """A function created in a transaction that rolls back would be gone while the
    connection still counted on it: a transaction takes the ordinary path instead."""
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    pg_engine.dispose()  # fresh connections (its autocommit pool too), without the function
    functions = text(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema()"
        " AND proname LIKE 'flowworker_report%'"
    )
    with transaction(pg_engine, organization_id) as connection:
        result = upsert_task_execution(connection, TaskReport(flow_execution_id, "t", 0, S.QUEUED))
        assert result.outcome is UpsertOutcome.CREATED
        assert connection.execute(functions).scalar_one() == 0
    with autocommit(pg_engine) as connection:
        upsert_task_execution(
            connection,
            TaskReport(flow_execution_id, "t", 0, S.RUNNING),
            organization_id=organization_id,
        )
        assert connection.execute(functions).scalar_one() == 1


@pytest.mark.postgres
def test_the_async_writer_answers_as_the_store_does(pg_engine: Engine, postgres_url: str) -> None:
    """`persistence.upsert_async.AsyncReportWriter`: the session function on psycopg's
    asyncio connections, with the outcomes, records, errors and history of
    `upsert_task_execution_record`; concurrent calls share its few connections."""
    from persistence.queries import fetch_task_execution
    from persistence.upsert_async import AsyncReportWriter

    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    other_organization, _ = make_flow_execution(pg_engine, "other")
    statuses = [S.QUEUED, S.RUNNING, S.RUNNING, S.QUEUED, S.COMPLETED]

    async def scenario() -> tuple[list[UpsertResult], list[TaskExecutionRecord], list[object]]:
        writer = AsyncReportWriter(postgres_url, size=2)
        try:
            results, records = [], []
            for status in statuses:
                result, record = await writer.upsert_task_execution_record(
                    TaskReport(
                        flow_execution_id,
                        "load",
                        0,
                        status,
                        input={"n": 1} if status is S.QUEUED else None,
                    ),
                    organization_id,
                )
                results.append(result)
                records.append(record)
            errors = []
            for report, organization in [
                (TaskReport(flow_execution_id, "load", 1, S.QUEUED), other_organization),
                (TaskReport(uuid.uuid4(), "load", 0, S.QUEUED), organization_id),
            ]:
                try:
                    await writer.upsert_task_execution_record(report, organization)
                except UnknownFlowExecution as exc:
                    errors.append(exc)
            many = await asyncio.gather(
                *(
                    writer.upsert_task_execution_record(
                        TaskReport(flow_execution_id, "many", idx, S.QUEUED), organization_id
                    )
                    for idx in range(12)
                )
            )
            errors += [result.outcome for result, _ in many]
            return results, records, errors
        finally:
            await writer.close()

    results, records, errors = asyncio.run(scenario())
    assert [r.outcome for r in results] == [
        UpsertOutcome.CREATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.UNCHANGED,
        UpsertOutcome.REFUSED,
        UpsertOutcome.UPDATED,
    ]
    assert [r.status for r in results] == [S.QUEUED, S.RUNNING, S.RUNNING, S.RUNNING, S.COMPLETED]
    assert [r.version for r in results] == [1, 2, 2, 2, 3]
    with transaction(pg_engine, organization_id) as reader:
        assert records[-1] == fetch_task_execution(reader, organization_id, records[-1].id)
    assert records[-1].input == {"n": 1}
    assert [type(e) for e in errors[:2]] == [UnknownFlowExecution, UnknownFlowExecution]
    assert errors[2:] == [UpsertOutcome.CREATED] * 12
    assert count_rows(pg_engine, TaskExecution) == 13
    assert history(pg_engine)[:3] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "completed"),
    ]


@pytest.mark.postgres
def test_the_async_writer_replaces_connections_the_server_closed(
    pg_engine: Engine, postgres_url: str
) -> None:
    """A database restart (here: its connections terminated) costs the next write nothing."""
    from persistence.upsert_async import AsyncReportWriter

    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    application = f"flowworker_writer_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).update_query_dict({"application_name": application})
    terminate = text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = :name"
    )
    remaining = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")

    async def scenario() -> list[UpsertOutcome]:
        writer = AsyncReportWriter(url.render_as_string(hide_password=False), size=2)
        try:
            outcomes = [
                (
                    await writer.upsert_task_execution_record(
                        TaskReport(flow_execution_id, "t", 0, S.QUEUED), organization_id
                    )
                )[0].outcome
            ]
            with pg_engine.connect() as connection:
                assert connection.execute(terminate, {"name": application}).scalar_one() == 1
                for _ in range(100):
                    if not connection.execute(remaining, {"name": application}).scalar_one():
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)  # the goodbye reaches the client's socket
            result, _ = await writer.upsert_task_execution_record(
                TaskReport(flow_execution_id, "t", 0, S.RUNNING), organization_id
            )
            return [*outcomes, result.outcome]
        finally:
            await writer.close()

    assert asyncio.run(scenario()) == [UpsertOutcome.CREATED, UpsertOutcome.UPDATED]
