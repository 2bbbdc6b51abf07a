from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence

import pytest
from sqlalchemy import Engine

from persistence import statements
from persistence.compiled import fetch_query_rows, fetch_rows
from persistence.database import transaction
from persistence.errors import (
    InvalidCursor,
    InvalidQuery,
    InvalidStatus,
    UnknownFlowExecution,
    UnknownTaskExecution,
)
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.queries import (
    Order,
    TaskExecutionFilter,
    encode_cursor,
    fetch_flow_execution,
    fetch_status_history,
    fetch_task_attempts,
    fetch_task_execution,
    fetch_task_executions,
)
from persistence.records import Page, TaskExecutionRecord, task_execution_record
from persistence.reports import TaskReport, UpsertResult, utcnow
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions

SPEC_FIELDS = {
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
    "created_at",
    "updated_at",
}
OPERATOR_FIELDS = {
    "celery_task_id",
    "attempt",
    "worker",
    "queued_at",
    "started_at",
    "finished_at",
    "version",
}
BOOM = {"message": "boom", "type": "ValueError", "traceback": "..."}


def new_flow_execution(engine: Engine, organization: str = "acme") -> tuple[uuid.UUID, uuid.UUID]:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, organization)
        return organization_id, create_flow_execution(connection, organization_id)


def record(engine: Engine, organization_id: uuid.UUID, *reports: TaskReport) -> list[UpsertResult]:
    with transaction(engine, organization_id) as connection:
        return upsert_task_executions(connection, reports)


def listing(
    engine: Engine,
    organization_id: uuid.UUID,
    query: TaskExecutionFilter | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    with transaction(engine, organization_id) as connection:
        return fetch_task_executions(connection, organization_id, query, limit, cursor)


def names(page: Page) -> list[str]:
    return [f"{item.task_name}:{item.task_execution_idx}" for item in page.items]


def ids(items: Sequence[TaskExecutionRecord]) -> list[uuid.UUID]:
    return [item.id for item in items]


def pause() -> None:
    """Let the clock move on, so the next write gets a later timestamp."""
    time.sleep(0.01)


def test_records_carry_every_column_and_serialize_to_json(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "extract", 0, S.QUEUED, input={"n": 1}, celery_task_id="c-1"),
        TaskReport(flow_execution_id, "extract", 0, S.RUNNING, worker="w1", attempt=0),
        TaskReport(flow_execution_id, "extract", 0, S.COMPLETED, output=[1, 2]),
    )
    (item,) = listing(engine, organization_id).items
    assert item.status is S.COMPLETED
    assert (item.input, item.output, item.error) == ({"n": 1}, [1, 2], None)
    assert (item.celery_task_id, item.worker, item.attempt, item.version) == ("c-1", "w1", 0, 3)
    assert None not in (item.queued_at, item.started_at, item.finished_at)
    document = item.to_dict()
    assert set(document) == SPEC_FIELDS | OPERATOR_FIELDS
    assert document["id"] == str(item.id)
    assert document["status"] == "completed"
    assert dt.datetime.fromisoformat(document["created_at"]) == item.created_at
    assert json.loads(json.dumps(document)) == document
    with transaction(engine, organization_id) as connection:
        assert fetch_task_execution(connection, organization_id, item.id) == item


def test_every_filter(engine: Engine) -> None:
    organization_id, first_flow = new_flow_execution(engine)
    _, second_flow = new_flow_execution(engine)
    record(
        engine,
        organization_id,
        TaskReport(first_flow, "extract", 0, S.FAILED, error=BOOM),
        TaskReport(first_flow, "extract", 1, S.COMPLETED, celery_task_id="celery-x"),
        TaskReport(first_flow, "load", 0, S.RUNNING),
    )
    pause()
    boundary = utcnow()
    pause()
    record(
        engine,
        organization_id,
        TaskReport(second_flow, "extract", 0, S.QUEUED),
        TaskReport(second_flow, "load", 0, S.CANCELLED),
    )
    pause()
    later = utcnow()
    pause()
    record(engine, organization_id, TaskReport(first_flow, "load", 0, S.COMPLETED))

    flow_number = {first_flow: 1, second_flow: 2}

    def matching(**fields: object) -> set[str]:
        page = listing(engine, organization_id, TaskExecutionFilter(**fields))  # type: ignore[arg-type]
        return {
            f"{flow_number[item.flow_execution_id]}/{item.task_name}:{item.task_execution_idx}"
            for item in page.items
        }

    assert matching() == {"1/extract:0", "1/extract:1", "1/load:0", "2/extract:0", "2/load:0"}
    assert matching(flow_execution_id=second_flow) == {"2/extract:0", "2/load:0"}
    assert matching(task_name="load") == {"1/load:0", "2/load:0"}
    assert matching(task_name="Load") == set()  # task names are case-sensitive
    assert matching(statuses={S.FAILED}) == {"1/extract:0"}
    assert matching(statuses={"failed", "cancelled"}) == {"1/extract:0", "2/load:0"}
    assert matching(statuses="queued") == {"2/extract:0"}
    assert matching(created_before=boundary) == {"1/extract:0", "1/extract:1", "1/load:0"}
    assert matching(created_after=boundary) == {"2/extract:0", "2/load:0"}
    assert matching(created_after=boundary, created_before=later) == {"2/extract:0", "2/load:0"}
    assert matching(updated_after=later) == {"1/load:0"}
    assert matching(updated_before=boundary) == {"1/extract:0", "1/extract:1"}
    assert matching(celery_task_id="celery-x") == {"1/extract:1"}
    assert matching(flow_execution_id=first_flow, task_name="extract", statuses={S.COMPLETED}) == {
        "1/extract:1"
    }
    assert matching(flow_execution_id=uuid.uuid4()) == set()


def test_order_newest_and_oldest_first(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    for task_name in ("a", "b", "c"):
        record(engine, organization_id, TaskReport(flow_execution_id, task_name, 0, S.QUEUED))
        pause()
    newest = listing(engine, organization_id)
    oldest = listing(engine, organization_id, TaskExecutionFilter(order=Order.OLDEST))
    assert names(newest) == ["c:0", "b:0", "a:0"]
    assert names(oldest) == ["a:0", "b:0", "c:0"]
    assert listing(engine, organization_id, TaskExecutionFilter(order="oldest")) == oldest  # type: ignore[arg-type]


def test_deleted_records_are_hidden_unless_asked_for(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    kept, deleted = record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "kept", 0, S.COMPLETED),
        TaskReport(flow_execution_id, "gone", 0, S.COMPLETED),
    )
    record(engine, organization_id, TaskReport(flow_execution_id, "gone", 0, S.DELETED))
    assert names(listing(engine, organization_id)) == ["kept:0"]
    everything = listing(engine, organization_id, TaskExecutionFilter(include_deleted=True))
    assert sorted(names(everything)) == ["gone:0", "kept:0"]
    only_deleted = listing(engine, organization_id, TaskExecutionFilter(statuses={S.DELETED}))
    assert names(only_deleted) == ["gone:0"]
    with transaction(engine, organization_id) as connection:
        # a lookup by id still answers: the status says what happened
        found = fetch_task_execution(connection, organization_id, deleted.task_execution_id)
        assert found.status is S.DELETED
        assert fetch_task_attempts(connection, organization_id, flow_execution_id, "gone") == ()
        assert (
            len(
                fetch_task_attempts(
                    connection, organization_id, flow_execution_id, "gone", include_deleted=True
                )
            )
            == 1
        )
        flow = fetch_flow_execution(connection, organization_id, flow_execution_id)
        assert ids(flow.task_executions) == [kept.task_execution_id]
        flow = fetch_flow_execution(
            connection, organization_id, flow_execution_id, include_deleted=True
        )
        assert len(flow.task_executions) == 2


@pytest.mark.parametrize("order", list(Order))
def test_pages_skip_and_repeat_nothing_while_records_arrive(engine: Engine, order: Order) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    # one statement: 23 rows share one created_at, so only the id breaks the ties
    existing = record(
        engine,
        organization_id,
        *(TaskReport(flow_execution_id, f"t{n:02}", 0, S.QUEUED) for n in range(23)),
    )
    pause()
    record(
        engine,
        organization_id,
        *(TaskReport(flow_execution_id, "u", n, S.QUEUED) for n in range(7)),
    )
    expected = {r.task_execution_id for r in existing} | set(
        ids(listing(engine, organization_id, TaskExecutionFilter(task_name="u")).items)
    )
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    query = TaskExecutionFilter(order=order)
    for page_number in range(20):  # bounded: 30 rows + arrivals in pages of 4
        page = listing(engine, organization_id, query, limit=4, cursor=cursor)
        seen += ids(page.items)
        # new records arrive, and old ones change status, between every two pages
        record(
            engine,
            organization_id,
            TaskReport(flow_execution_id, "arrival", page_number, S.QUEUED),
            TaskReport(flow_execution_id, f"t{page_number:02}", 0, S.RUNNING),
        )
        cursor = page.next_cursor
        if cursor is None:
            break
    assert cursor is None
    assert len(seen) == len(set(seen)), "a record was repeated"
    assert expected <= set(seen), "a record was skipped"
    if order is Order.NEWEST:
        assert set(seen) == expected  # arrivals are newer than page 1: not part of this listing


def test_organizations_never_see_each_other(engine: Engine) -> None:
    acme, acme_flow = new_flow_execution(engine, "acme")
    globex, globex_flow = new_flow_execution(engine, "globex")
    (acme_task,) = record(engine, acme, TaskReport(acme_flow, "t", 0, S.FAILED, error=BOOM))
    (globex_task,) = record(engine, globex, TaskReport(globex_flow, "t", 0, S.FAILED, error=BOOM))
    assert ids(listing(engine, acme).items) == [acme_task.task_execution_id]
    assert ids(listing(engine, globex).items) == [globex_task.task_execution_id]
    assert listing(engine, acme, TaskExecutionFilter(flow_execution_id=globex_flow)).items == ()
    with transaction(engine, acme) as connection:
        with pytest.raises(UnknownTaskExecution):
            fetch_task_execution(connection, acme, globex_task.task_execution_id)
        with pytest.raises(UnknownFlowExecution):
            fetch_flow_execution(connection, acme, globex_flow)
        with pytest.raises(UnknownTaskExecution):
            fetch_status_history(connection, acme, globex_task.task_execution_id)
        assert fetch_task_attempts(connection, acme, globex_flow, "t") == ()


def test_attempts_in_idx_order_with_their_errors(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "load", 2, S.COMPLETED, output="ok"),
        TaskReport(flow_execution_id, "load", 0, S.FAILED, error=BOOM),
        TaskReport(flow_execution_id, "load", 1, S.FAILED, error={**BOOM, "message": "again"}),
        TaskReport(flow_execution_id, "other", 0, S.COMPLETED),
    )
    with transaction(engine, organization_id) as connection:
        attempts = fetch_task_attempts(connection, organization_id, flow_execution_id, "load")
    assert [a.task_execution_idx for a in attempts] == [0, 1, 2]
    assert [a.error and a.error["message"] for a in attempts] == ["boom", "again", None]
    assert [a.status for a in attempts] == [S.FAILED, S.FAILED, S.COMPLETED]


def test_flow_execution_with_tasks_and_summary(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "extract", 0, S.RUNNING),
        TaskReport(flow_execution_id, "load", 0, S.RUNNING),
        TaskReport(flow_execution_id, "notify", 0, S.RUNNING),
    )
    pause()
    record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "extract", 0, S.FAILED, error=BOOM),
        TaskReport(flow_execution_id, "extract", 1, S.COMPLETED),
        TaskReport(flow_execution_id, "load", 0, S.FAILED, error=BOOM),
    )
    with transaction(engine, organization_id) as connection:
        running = fetch_flow_execution(connection, organization_id, flow_execution_id)
    assert running.id == flow_execution_id
    assert running.organization_id == organization_id
    assert running.status is S.QUEUED
    summary = running.summary
    assert summary.task_execution_count == 4
    assert summary.counts_by_status == {"completed": 1, "failed": 2, "running": 1}
    assert summary.failed_tasks == ("load",)  # extract failed once, then its retry completed
    assert summary.started_at is not None
    assert summary.finished_at is None  # notify is still running
    assert summary.duration_seconds is None
    pause()
    record(engine, organization_id, TaskReport(flow_execution_id, "notify", 0, S.COMPLETED))
    with transaction(engine, organization_id) as connection:
        done = fetch_flow_execution(connection, organization_id, flow_execution_id)
    assert done.summary.finished_at == max(
        t.finished_at for t in done.task_executions if t.finished_at
    )
    assert done.summary.started_at == min(
        t.started_at for t in done.task_executions if t.started_at
    )
    assert done.summary.duration_seconds == pytest.approx(
        (done.summary.finished_at - done.summary.started_at).total_seconds()
    )
    assert done.summary.duration_seconds > 0
    document = done.to_dict()
    assert document["summary"]["failed_tasks"] == ["load"]
    assert [t["task_name"] for t in document["task_executions"]][:3] == [
        "extract",
        "load",
        "notify",
    ]
    assert json.loads(json.dumps(document)) == document


def test_unknown_ids_raise(engine: Engine) -> None:
    organization_id, _ = new_flow_execution(engine)
    missing = uuid.uuid4()
    with transaction(engine, organization_id) as connection:
        with pytest.raises(UnknownTaskExecution, match=str(missing)):
            fetch_task_execution(connection, organization_id, missing)
        with pytest.raises(UnknownFlowExecution, match=str(missing)):
            fetch_flow_execution(connection, organization_id, missing)
        with pytest.raises(UnknownTaskExecution, match=str(missing)):
            fetch_status_history(connection, organization_id, missing)


def test_status_history_lists_every_transition(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    (created, *_) = record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "t", 0, S.QUEUED),
        TaskReport(flow_execution_id, "t", 0, S.RUNNING),
        TaskReport(flow_execution_id, "t", 0, S.QUEUED),  # refused: a backward move
        TaskReport(flow_execution_id, "t", 0, S.FAILED, modified_by="w9"),
    )
    with transaction(engine, organization_id) as connection:
        history = fetch_status_history(connection, organization_id, created.task_execution_id)
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, S.QUEUED),
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.FAILED),
    ]
    assert [h.version for h in history] == [1, 2, 3]
    assert history[-1].modified_by == "w9"
    assert history[0].to_dict()["from_status"] is None
    assert history[-1].to_dict()["to_status"] == "failed"


def test_bad_queries_say_what_was_wrong(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    record(
        engine,
        organization_id,
        *(TaskReport(flow_execution_id, "t", n, S.QUEUED) for n in range(3)),
    )
    page = listing(engine, organization_id, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor, match="malformed cursor 'not-a-cursor'"):
        listing(engine, organization_id, cursor="not-a-cursor")
    with pytest.raises(InvalidCursor, match="malformed"):
        listing(engine, organization_id, cursor=page.next_cursor[:-3])
    with pytest.raises(InvalidCursor, match="newest-first"):
        listing(
            engine,
            organization_id,
            TaskExecutionFilter(order=Order.OLDEST),
            cursor=page.next_cursor,
        )
    for limit in (0, 1001, -1):
        with pytest.raises(InvalidQuery, match=f"not {limit}"):
            listing(engine, organization_id, limit=limit)
    with pytest.raises(InvalidStatus, match="'finished'"):
        TaskExecutionFilter(statuses={"finished"})  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="timezone-aware"):
        TaskExecutionFilter(created_after=dt.datetime(2026, 1, 1))
    with pytest.raises(InvalidQuery, match="created_after"):
        TaskExecutionFilter(created_after=utcnow(), created_before=utcnow() - dt.timedelta(days=1))
    with pytest.raises(InvalidQuery, match="order"):
        TaskExecutionFilter(order="sideways")  # type: ignore[arg-type]


def test_cursor_round_trips_through_a_listing(engine: Engine) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine)
    results = record(
        engine,
        organization_id,
        *(TaskReport(flow_execution_id, "t", n, S.QUEUED) for n in range(5)),
    )
    first = min(results, key=lambda r: r.task_execution_id)
    with transaction(engine, organization_id) as connection:
        row = fetch_task_execution(connection, organization_id, first.task_execution_id)
    cursor = encode_cursor(Order.OLDEST, row.created_at, row.id)
    after = listing(engine, organization_id, TaskExecutionFilter(order=Order.OLDEST), cursor=cursor)
    assert row.id not in ids(after.items)
    assert len(after.items) == 4  # all five share created_at: the rest sort after the smallest id


def test_postgres_fast_path_reads_what_sqlalchemy_reads(pg_engine: Engine) -> None:
    """Every statement of the query layer, run on the DBAPI cursor (`fetch_rows`) and in
    binary format with the fast jsonb loader (`fetch_query_rows`), gives the values and
    types SQLAlchemy's ordinary execution gives."""
    organization_id, flow_execution_id = new_flow_execution(pg_engine)
    (result, _) = record(
        pg_engine,
        organization_id,
        TaskReport(flow_execution_id, "t", 0, S.QUEUED, input={"a": [1, "x", None]}),
        TaskReport(flow_execution_id, "t", 0, S.FAILED, error=BOOM, worker="w", attempt=2),
    )
    now = utcnow()
    common = {"organization_id": organization_id, "flow_execution_id": flow_execution_id}
    cases = [
        (statements.ATTEMPTS[False], {**common, "task_name": "t"}),
        (statements.ATTEMPTS[True], {**common, "task_name": "t"}),
        (statements.BY_ID, {"organization_id": organization_id, "id": result.task_execution_id}),
        (statements.FLOW_EXECUTION, common),
        (statements.FLOW_TASKS[False], common),
        (statements.FLOW_TASKS[True], common),
        (
            statements.HISTORY,
            {"organization_id": organization_id, "task_execution_id": result.task_execution_id},
        ),
        (
            statements.listing_statement(
                ("created_after",), ("failed",), False, Order.NEWEST, True
            ),
            {
                "organization_id": organization_id,
                "created_after": now - dt.timedelta(hours=1),
                "after_created_at": now + dt.timedelta(hours=1),
                "after_id": uuid.uuid4(),
                "limit": 10,
            },
        ),
    ]
    with transaction(pg_engine, organization_id) as connection:
        for statement, parameters in cases:
            ordinary = [tuple(row) for row in connection.execute(statement, parameters).all()]
            assert ordinary, statement
            for fetch in (fetch_rows, fetch_query_rows):
                fast = [tuple(row) for row in fetch(connection, statement, parameters)]
                assert repr(fast) == repr(ordinary), (fetch.__name__, statement)
        (row,) = fetch_query_rows(connection, statements.BY_ID, cases[2][1])
    assert isinstance(row[0], uuid.UUID)
    assert row[10].tzinfo is not None  # created_at
    assert row[6] == {"a": [1, "x", None]}
    assert row[8] == BOOM


def test_records_built_from_rows_equal_records_built_by_init(engine: Engine) -> None:
    """`task_execution_record` fills the slots without `__init__`: the same frozen record."""
    organization_id, flow_execution_id = new_flow_execution(engine)
    (result,) = record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "t", 0, S.FAILED, input=[1.5], error=BOOM, worker="w"),
    )
    with transaction(engine, organization_id) as connection:
        (row,) = fetch_query_rows(
            connection,
            statements.BY_ID,
            {"organization_id": organization_id, "id": result.task_execution_id},
        )
    built = task_execution_record(row)
    values = list(row)
    values[5] = S(values[5])
    by_init = TaskExecutionRecord(*values)
    assert not hasattr(TaskExecutionRecord, "__post_init__")
    assert built == by_init
    assert repr(built) == repr(by_init)
    assert built.to_dict() == by_init.to_dict()
    assert built.status is S.FAILED
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.task_name = "other"  # type: ignore[misc]
