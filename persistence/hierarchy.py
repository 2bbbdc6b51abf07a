"""Organizations, flow executions and the task_execution_idx counter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Integer, bindparam, func, literal, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from persistence.errors import UnknownFlowExecution, UnknownOrganization
from persistence.models import (
    Base,
    FlowExecution,
    Organization,
    TaskExecution,
    TaskIndexCounter,
    UTCDateTime,
)
from persistence.reports import utcnow, validate_task_name
from persistence.status import ExecutionStatus

_org = Base.metadata.tables[Organization.__tablename__]
_fe = Base.metadata.tables[FlowExecution.__tablename__]
_te = Base.metadata.tables[TaskExecution.__tablename__]
_counter = Base.metadata.tables[TaskIndexCounter.__tablename__]


def _insert(connection: Connection) -> Any:
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


_ORGANIZATION_NAMESPACE = uuid.UUID("0b6a3c1e-58d4-4f3a-9f4e-6a0d8f2c9b71")


def organization_id_for(name: str) -> uuid.UUID:
    """The id an organization called `name` gets: derived from the name, so that a worker can
    label a task with it without asking the database (which may be down at that moment).
    A name that is a UUID is taken as the id itself."""
    try:
        return uuid.UUID(name)
    except ValueError:
        return uuid.uuid5(_ORGANIZATION_NAMESPACE, name)


def ensure_organization(connection: Connection, name: str) -> uuid.UUID:
    """The id of the organization called `name`, creating it on first use.

    Only the creation needs INSERT on `organizations`: the application role of row-level
    security has none (the owner creates organizations) and can still look one up here.
    """
    by_name = select(_org.c.id).where(_org.c.name == name)
    found = connection.execute(by_name).scalar()
    if found is None:
        statement = (
            _insert(connection)(_org)
            .values(id=organization_id_for(name), name=name)
            .on_conflict_do_nothing()
        )
        connection.execute(statement)
        found = connection.execute(by_name).scalar_one()
    return uuid.UUID(str(found))


def fetch_organization_id(connection: Connection, name_or_id: str) -> uuid.UUID:
    try:
        as_id = uuid.UUID(name_or_id)
    except ValueError:
        condition = _org.c.name == name_or_id
    else:
        condition = (_org.c.id == as_id) | (_org.c.name == name_or_id)
    found = connection.execute(select(_org.c.id).where(condition)).scalar()
    if found is None:
        raise UnknownOrganization(f"no organization named {name_or_id!r}")
    return uuid.UUID(str(found))


@dataclass(frozen=True, slots=True)
class AdHocFlowExecution:
    """A Celery workflow that no flow definition started, recorded under `organization_id`."""

    id: uuid.UUID
    organization_id: uuid.UUID
    celery_root_id: str | None = None


def ensure_flow_executions(
    connection: Connection, executions: Iterable[AdHocFlowExecution]
) -> None:
    """Create the ad-hoc flow executions that do not exist yet (one statement)."""
    now = utcnow()
    unique = {execution.id: execution for execution in executions}.values()
    if not unique:
        return
    if connection.dialect.name == "postgresql":
        # one JSON document for the batch: psycopg's executemany costs ~10 us of Python a row
        document = json.dumps(
            [[str(e.id), str(e.organization_id), e.celery_root_id] for e in unique],
            separators=(",", ":"),
        )
        connection.execute(_ENSURE_FLOW_EXECUTIONS_PG, {"rows": document, "now": now})
        return
    rows = [
        {
            "id": execution.id,
            "organization_id": execution.organization_id,
            "celery_root_id": execution.celery_root_id,
            "status": ExecutionStatus.RUNNING.value,
            "created_at": now,
            "updated_at": now,
        }
        for execution in unique
    ]
    connection.execute(_insert(connection)(_fe).on_conflict_do_nothing(), rows)


_ENSURE_FLOW_EXECUTIONS_PG = text(
    "INSERT INTO flow_executions"
    " (id, organization_id, celery_root_id, status, created_at, updated_at)"
    f" SELECT (r->>0)::uuid, (r->>1)::uuid, r->>2, '{ExecutionStatus.RUNNING.value}', :now, :now"
    " FROM json_array_elements(CAST(:rows AS json)) AS r"
    " ON CONFLICT DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))


def create_flow_execution(
    connection: Connection,
    organization_id: uuid.UUID,
    *,
    flow_id: uuid.UUID | None = None,
    inputs: Any = None,
    flow_execution_id: uuid.UUID | None = None,
    status: ExecutionStatus = ExecutionStatus.QUEUED,
) -> uuid.UUID:
    now = utcnow()
    new_id = flow_execution_id or uuid.uuid4()
    connection.execute(
        _fe.insert().values(
            id=new_id,
            organization_id=organization_id,
            flow_id=flow_id,
            inputs=inputs,
            status=status.value,
            created_at=now,
            updated_at=now,
        )
    )
    return new_id


def allocate_task_execution_idx(
    connection: Connection,
    flow_execution_id: uuid.UUID,
    task_name: str,
    count: int = 1,
    *,
    at_least: int = 0,
) -> int:
    """Reserve `count` consecutive indices for `task_name`; returns the first.

    One atomic statement: concurrent callers (any process, any machine) serialize on the
    counter row, so they never receive the same index. Indices a client wrote directly
    (through the HTTP API) are skipped, never reused, and so is everything below `at_least`
    (a retry passes its own idx + 1: its first attempt may not be written yet).
    """
    validate_task_name(task_name)
    highest_recorded = (
        select(func.coalesce(func.max(_te.c.task_execution_idx) + 1, 0))
        .where(_te.c.flow_execution_id == flow_execution_id, _te.c.task_name == task_name)
        .scalar_subquery()
    )
    bumped = func.max if connection.dialect.name == "sqlite" else func.greatest
    floor = literal(at_least, Integer())
    proposed = select(
        _fe.c.id,
        literal(task_name),
        _fe.c.organization_id,
        bumped(highest_recorded, floor) + literal(count, Integer()),
    ).where(_fe.c.id == flow_execution_id)
    statement = _insert(connection)(_counter).from_select(
        ["flow_execution_id", "task_name", "organization_id", "next_idx"], proposed
    )
    statement = statement.on_conflict_do_update(
        index_elements=["flow_execution_id", "task_name"],
        set_={"next_idx": bumped(_counter.c.next_idx, highest_recorded, floor) + count},
    ).returning(_counter.c.next_idx)
    next_idx = connection.execute(statement).scalar()
    if next_idx is None:
        raise UnknownFlowExecution(f"flow execution {flow_execution_id} does not exist")
    return int(next_idx) - count


def fetch_execution_key(
    connection: Connection, celery_task_id: str, attempt: int
) -> tuple[uuid.UUID, str, int] | None:
    """The key of the record of Celery task `celery_task_id` at `attempt`, if recorded."""
    row = connection.execute(
        select(_te.c.flow_execution_id, _te.c.task_name, _te.c.task_execution_idx)
        .where(_te.c.celery_task_id == celery_task_id, _te.c.attempt == attempt)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1], row[2])


ExecutionKey = tuple[uuid.UUID, str, int]


def recorded_keys(connection: Connection, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]:
    """Which of the (flow_execution_id, task_name, task_execution_idx) `keys` have a record
    (that the connection's organization may see): one index lookup each, one statement."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return set()
    if connection.dialect.name == "postgresql":
        rows = connection.execute(_RECORDED_KEYS_PG, {"keys": orjson.dumps(wanted).decode()})
    else:
        key = tuple_(_te.c.flow_execution_id, _te.c.task_name, _te.c.task_execution_idx)
        rows = connection.execute(
            select(_te.c.flow_execution_id, _te.c.task_name, _te.c.task_execution_idx).where(
                key.in_(wanted)
            )
        )
    return {(row[0], row[1], row[2]) for row in rows}


# one unique-index lookup per key (LATERAL ... LIMIT 1 is never flattened into a join that
# the planner, taking the JSON array for 100 rows, could make a hash of the whole table)
_RECORDED_KEYS_PG = text(
    "SELECT t.flow_execution_id, t.task_name, t.task_execution_idx"
    " FROM json_array_elements(CAST(:keys AS json)) AS k"
    " CROSS JOIN LATERAL (SELECT flow_execution_id, task_name, task_execution_idx"
    " FROM task_executions WHERE flow_execution_id = (k->>0)::uuid"
    " AND task_name = k->>1 AND task_execution_idx = (k->>2)::int LIMIT 1) AS t"
)
