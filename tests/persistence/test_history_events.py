"""The history as the triggers write it (PostgreSQL: one INSERT per row, migration 0006;
SQLite: 0005's row triggers): one event per status passed, each task's in version order,
whatever one statement writes (new records, a batch mixing new and known records, a
hand-written UPDATE of many). `test_one_insert_history_migration` holds 0006 against 0005."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, delete, select, update

from persistence.database import transaction
from persistence.models import Base, FlowExecution, TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions
from tests.persistence.helpers import history_steps, make_flow_execution

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
QUEUED_AT, STARTED_AT = T0, T0 + dt.timedelta(seconds=1)
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_te = Base.metadata.tables[TaskExecution.__tablename__]
_events = Base.metadata.tables[TaskExecutionEvent.__tablename__]

Step = tuple[str | None, str, int]


def read_rows(engine: Engine, query: Any) -> list[Any]:
    with transaction(engine) as connection:
        return list(connection.execute(query))


def histories(engine: Engine) -> dict[int, list[Step]]:
    """task_execution_idx -> (from_status, to_status, version) of its events, in id order."""
    query = (
        select(
            _te.c.task_execution_idx, _events.c.from_status, _events.c.to_status, _events.c.version
        )
        .join(_te, _te.c.id == _events.c.task_execution_id)
        .order_by(_events.c.id)
    )
    found: dict[int, list[Step]] = defaultdict(list)
    for idx, *step in read_rows(engine, query):
        found[idx].append(tuple(step))
    return dict(found)


def test_a_new_record_of_any_status_has_one_event(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(
            connection,
            [TaskReport(flow_execution_id, "t", idx, status) for idx, status in enumerate(S)],
        )
    assert histories(engine) == {idx: [(None, status.value, 1)] for idx, status in enumerate(S)}


# --- one batch statement, new and known records alike -------------------------------------

Q, R, C = "queued", "running", "completed"
FOLDED_COMPLETED = [(None, Q, 1), (Q, R, 2), (R, C, 3)]


def _report(status: S, **folded: dt.datetime) -> dict[str, Any]:
    return {"status": status, **folded}


#: case -> (reports written before, one statement each; the batch's report; the history)
CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], list[Step]]] = {
    "new": ([], _report(S.QUEUED), [(None, Q, 1)]),
    "new, folded": (
        [],
        _report(S.COMPLETED, queued_at=QUEUED_AT, started_at=STARTED_AT),
        FOLDED_COMPLETED,
    ),
    "new, running since queued": (
        [],
        _report(S.RUNNING, queued_at=QUEUED_AT),
        [(None, Q, 1), (Q, R, 2)],
    ),
    "new, finished without queued_at": (
        [],
        _report(S.FAILED, started_at=STARTED_AT),
        [(None, R, 1), (R, "failed", 2)],
    ),
    "queued, passes running": (
        [_report(S.QUEUED)],
        _report(S.COMPLETED, started_at=STARTED_AT),
        FOLDED_COMPLETED,
    ),
    "queued, starts": ([_report(S.QUEUED)], _report(S.RUNNING), [(None, Q, 1), (Q, R, 2)]),
    "running, finishes": (
        [_report(S.QUEUED), _report(S.RUNNING)],
        _report(S.COMPLETED, queued_at=QUEUED_AT, started_at=STARTED_AT),
        FOLDED_COMPLETED,
    ),
    "repeated": (
        [_report(S.QUEUED), _report(S.RUNNING)],
        _report(S.RUNNING),
        [(None, Q, 1), (Q, R, 2)],
    ),
    "refused": ([_report(S.COMPLETED)], _report(S.RUNNING, queued_at=QUEUED_AT), [(None, C, 1)]),
    "finished, goes stale": (
        [_report(S.COMPLETED)],
        _report(S.STALE),
        [(None, C, 1), (C, "stale", 2)],
    ),
}
COPIES = 20  # 200 reports: one statement on both backends (upsert_statement.CHUNK_ROWS)


def test_one_batch_statement_mixing_new_and_known_records(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    cases = list(CASES.values()) * COPIES

    def reports(fields: dict[int, dict[str, Any]]) -> list[TaskReport]:
        return [TaskReport(flow_execution_id, "t", idx, **f) for idx, f in fields.items()]

    with transaction(engine, organization_id) as connection:
        for step in range(2):
            earlier = {idx: c[0][step] for idx, c in enumerate(cases) if len(c[0]) > step}
            upsert_task_executions(connection, reports(earlier))
        upsert_task_executions(connection, reports(dict(enumerate(c[1] for c in cases))))
    assert histories(engine) == {idx: case[2] for idx, case in enumerate(cases)}


# --- statements other than the upsert --------------------------------------------------------


def test_a_hand_written_update_of_many_records_writes_each_ones_event(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine)
    statuses = [S.COMPLETED, S.FAILED, S.COMPLETED, S.RUNNING, S.QUEUED]
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(
            connection, [TaskReport(flow_execution_id, "t", i, s) for i, s in enumerate(statuses)]
        )
        connection.execute(
            update(_te)
            .where(_te.c.status.in_([S.COMPLETED, S.FAILED]))
            .values(status=S.STALE, version=_te.c.version + 1, modified_by="reaper")
        )
        connection.execute(
            update(_te)
            .where(_te.c.task_execution_idx >= 2)
            .values(status=S.DELETED, version=_te.c.version + 1)
        )
        # a change that keeps every status is not an event
        connection.execute(update(_te).values(worker="w1"))
    assert histories(engine) == {
        0: [(None, C, 1), (C, "stale", 2)],
        1: [(None, "failed", 1), ("failed", "stale", 2)],
        2: [(None, C, 1), (C, "stale", 2), ("stale", "deleted", 3)],
        3: [(None, R, 1), (R, "deleted", 2)],
        4: [(None, Q, 1), (Q, "deleted", 2)],
    }
    with transaction(engine) as connection:
        actors = connection.execute(select(_events.c.modified_by).where(_events.c.version == 2))
        assert sorted(actors.scalars()) == ["reaper"] * 3 + ["system"] * 2


def test_deleting_records_deletes_their_history(engine: Engine) -> None:
    _, kept = make_flow_execution(engine)
    _, dropped = make_flow_execution(engine)
    with transaction(engine) as connection:
        for flow_execution_id in (kept, dropped):
            upsert_task_executions(
                connection,
                [
                    TaskReport(flow_execution_id, "t", i, S.COMPLETED, queued_at=T0)
                    for i in range(3)
                ],
            )
        connection.execute(delete(_fe).where(_fe.c.id == dropped))
        connection.execute(delete(_te).where(_te.c.task_execution_idx == 0))
    assert history_steps(engine) == [(None, Q, 1), (Q, C, 2)] * 2
    assert {idx for (idx,) in read_rows(engine, select(_te.c.task_execution_idx))} == {1, 2}
