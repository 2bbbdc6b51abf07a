"""Migration 0006 (one INSERT per row for the history on PostgreSQL), up and down, and the
same statements recorded alike under 0005's function, 0006's and SQLite's row triggers."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from persistence.database import create_database_engine, transaction
from persistence.models import Base, FlowExecution, Organization, TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport
from persistence.schema import downgrade_database, upgrade_database
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions
from tests.conftest import empty_tables
from tests.persistence.helpers import history_steps, make_flow_execution
from tests.persistence.test_history_events import (
    FOLDED_COMPLETED,
    QUEUED_AT,
    STARTED_AT,
    T0,
    C,
    Q,
    R,
    read_rows,
)
from tests.persistence.test_migrations import (  # noqa: F401 (fixtures)
    fresh_engine,
    fresh_url,
)

_organizations = Base.metadata.tables[Organization.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_te = Base.metadata.tables[TaskExecution.__tablename__]
_events = Base.metadata.tables[TaskExecutionEvent.__tablename__]

ORGANIZATION, FLOW_EXECUTION = uuid.UUID(int=1), uuid.UUID(int=2)


def _record(rng: random.Random, idx: int) -> dict[str, Any]:
    """A record with any status and any of its step times, as a hand-written statement may
    write it (the upsert writes only some of these)."""

    def sometimes(seconds: int) -> dt.datetime | None:
        return T0 + dt.timedelta(seconds=seconds) if rng.random() < 0.5 else None

    return {
        "id": uuid.UUID(int=rng.getrandbits(128)),
        "organization_id": ORGANIZATION,
        "flow_execution_id": FLOW_EXECUTION,
        "task_name": "t",
        "task_execution_idx": idx,
        "status": rng.choice(list(S)).value,
        "modified_by": rng.choice(["system", "alice"]),
        "queued_at": sometimes(1),
        "started_at": sometimes(2),
        "finished_at": sometimes(3),
        "created_at": T0,
        "updated_at": T0 + dt.timedelta(seconds=rng.randrange(10, 100)),
        "version": rng.randint(1, 5),
    }


def _replay(engine: Engine) -> dict[uuid.UUID, list[tuple[Any, ...]]]:
    """Run one fixed series of multi-row statements (INSERT, INSERT ... ON CONFLICT DO
    UPDATE mixing new and known records, UPDATE) and return each record's history."""
    rng = random.Random(20261130)
    dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with transaction(engine) as connection:
        connection.execute(insert(_organizations).values(id=ORGANIZATION, name="acme"))
        connection.execute(
            insert(_fe).values(
                id=FLOW_EXECUTION,
                organization_id=ORGANIZATION,
                status=S.RUNNING,
                created_at=T0,
                updated_at=T0,
            )
        )
        known = list(range(100))
        connection.execute(insert(_te).values([_record(rng, idx) for idx in known]))
        for _ in range(4):
            new = [len(known) + i for i in range(20)]
            upsert = dialect_insert(_te).values(
                [_record(rng, idx) for idx in rng.sample(known, 40) + new]
            )
            connection.execute(
                upsert.on_conflict_do_update(
                    index_elements=["flow_execution_id", "task_name", "task_execution_idx"],
                    set_={
                        **{name: upsert.excluded[name] for name in _UPSERTED},
                        "version": _te.c.version + 1,
                    },
                    where=_te.c.version < 6,  # and some are refused
                )
            )
            known += new
        for round_ in range(6):
            connection.execute(
                update(_te)
                .where(_te.c.task_execution_idx.in_(rng.sample(known, 80)))
                .values(
                    status=rng.choice(list(S)).value,
                    version=_te.c.version + 1,
                    finished_at=rng.choice([None, T0 + dt.timedelta(seconds=5)]),
                    updated_at=T0 + dt.timedelta(seconds=200 + round_),
                )
            )
    history: dict[uuid.UUID, list[tuple[Any, ...]]] = defaultdict(list)
    columns = [c for c in _events.c if c.name not in ("id", "task_execution_id")]
    query = select(_events.c.task_execution_id, *columns).order_by(_events.c.id)
    for task_execution_id, *event in read_rows(engine, query):
        history[task_execution_id].append(tuple(event))
    return dict(history)


_UPSERTED = ("status", "modified_by", "queued_at", "started_at", "finished_at", "updated_at")


@pytest.mark.parametrize("fresh_url", ["postgres"], indirect=True)
def test_one_insert_per_row_writes_what_one_insert_per_event_wrote(
    fresh_engine: Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    upgrade_database(fresh_engine, "0005_step_history")
    by_row_trigger = _replay(fresh_engine)  # 0005: one INSERT per event
    empty_tables(fresh_engine)
    upgrade_database(fresh_engine)
    assert _replay(fresh_engine) == by_row_trigger

    sqlite_engine = create_database_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    try:
        upgrade_database(sqlite_engine)
        assert _replay(sqlite_engine) == by_row_trigger
    finally:
        sqlite_engine.dispose()
    # the series passes every kind of step: folded ones, refusals, repeats
    steps = [(event[1], event[2]) for events in by_row_trigger.values() for event in events]
    assert {(None, Q), (Q, R), (None, R), (R, C)} <= set(steps)
    assert len(by_row_trigger) == 180
    assert len(steps) > 2 * 180


# --- migration 0006, down and up -------------------------------------------------------------


def history_ddl(engine: Engine) -> dict[str, str]:
    """name -> definition of every trigger (and, on PostgreSQL, of flowworker's functions)."""
    if engine.dialect.name == "postgresql":
        query = (
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
            " UNION ALL SELECT proname, pg_get_functiondef(oid) FROM pg_proc"
            " WHERE proname LIKE 'flowworker%'"
        )
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
    return dict(read_rows(engine, text(query)))


def test_0006_down_and_up_again(fresh_engine: Engine) -> None:  # noqa: F811
    engine = fresh_engine
    upgrade_database(engine, "0005_step_history")
    at_0005 = history_ddl(engine)
    upgrade_database(engine)
    at_head = history_ddl(engine)
    if engine.dialect.name == "postgresql":
        # the same trigger, a new body of its function
        assert set(at_head) == set(at_0005)
        function = "flowworker_record_status_change"
        assert {name for name in at_head if at_head[name] != at_0005[name]} == {function}
        assert "FROM (VALUES" in at_head[function]
    else:
        assert at_head == at_0005
    organization_id, flow_execution_id = make_flow_execution(engine)
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(connection, [TaskReport(flow_execution_id, "t", 0, S.QUEUED)])

    downgrade_database(engine, "0005_step_history")
    assert history_ddl(engine) == at_0005
    upgrade_database(engine)
    assert history_ddl(engine) == at_head
    # the record made before goes on, its history with it
    folded = TaskReport(
        flow_execution_id, "t", 0, S.COMPLETED, queued_at=QUEUED_AT, started_at=STARTED_AT
    )
    with transaction(engine, organization_id) as connection:
        upsert_task_executions(connection, [folded])
    assert history_steps(engine) == FOLDED_COMPLETED
