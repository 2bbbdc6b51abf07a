"""The worker's batch statements look each report's rows up by index, however the planner
would join a JSON record set (which it takes for 100 rows) to a table it thinks is small:
a hash of the whole `flow_executions` or `task_executions` per batch costs in proportion
to the table, and a prepared statement keeps that plan as the table grows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, Engine

from persistence.database import transaction
from persistence.hierarchy import (
    _RECORDED_KEYS_PG,
    AdHocFlowExecution,
    ensure_flow_executions,
    ensure_organization,
)
from persistence.reports import TaskReport, utcnow
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions
from persistence.upsert_statement import prepare_upsert

ROWS = 3000


def _scanned_tables(plan: dict[str, Any]) -> Iterator[str]:
    if plan.get("Node Type") == "Seq Scan":
        yield plan["Relation Name"]
    for child in plan.get("Plans", ()):
        yield from _scanned_tables(child)


def _plan(connection: Connection, sql: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    document = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", parameters).scalar_one()
    return document[0]["Plan"]  # type: ignore[no-any-return]


def _filled(engine: Engine) -> tuple[uuid.UUID, list[AdHocFlowExecution]]:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "plans")
    executions = [AdHocFlowExecution(uuid.uuid4(), organization_id, None) for _ in range(ROWS)]
    with transaction(engine, organization_id) as connection:
        ensure_flow_executions(connection, executions)
        upsert_task_executions(
            connection, [TaskReport(e.id, "step", 0, S.COMPLETED) for e in executions]
        )
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE flow_executions, task_executions")
        connection.commit()
    return organization_id, executions


def test_a_batch_upsert_looks_flow_executions_up_by_key(pg_engine: Engine) -> None:
    organization_id, executions = _filled(pg_engine)
    reports = [TaskReport(e.id, "step", 1, S.COMPLETED) for e in executions[:50]]
    with transaction(pg_engine, organization_id) as connection:
        statement, parameters = prepare_upsert(connection, reports, utcnow())
        compiled = statement.compile(dialect=connection.dialect)
        plan = _plan(connection, str(compiled), compiled.construct_params(parameters))
    assert "flow_executions" not in set(_scanned_tables(plan))


def test_the_recorded_keys_lookup_reads_task_executions_by_key(pg_engine: Engine) -> None:
    organization_id, executions = _filled(pg_engine)
    keys = orjson.dumps([[str(e.id), "step", 0] for e in executions[:50]]).decode()
    with transaction(pg_engine, organization_id) as connection:
        compiled = _RECORDED_KEYS_PG.compile(dialect=connection.dialect)
        plan = _plan(connection, str(compiled), compiled.construct_params({"keys": keys}))
    assert "task_executions" not in set(_scanned_tables(plan))
