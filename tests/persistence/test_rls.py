"""Row-level security, seen through the application role that `flowworker db grant` makes.

Organization A's transactions cannot read, change or delete organization B's rows, not
through the store's functions and not through hand-written SQL; a transaction that names
no organization sees nothing at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, Uuid, bindparam, make_url, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from persistence.database import autocommit, create_database_engine, transaction
from persistence.errors import TaskNotInFlow, UnknownFlowExecution
from persistence.hierarchy import (
    allocate_task_execution_idx,
    create_flow_execution,
    ensure_organization,
)
from persistence.models import TENANT_TABLES, Base
from persistence.reports import TaskReport, UpsertOutcome, utcnow
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_execution, upsert_task_executions
from tests.conftest import SESSION_TAG

pytestmark = pytest.mark.postgres

APP_ROLE = f"flowworker_app_{SESSION_TAG}"
APP_PASSWORD = "app-secret"


@pytest.fixture(scope="session")
def app_role(postgres_url: str, postgres_engine: Engine) -> Iterator[str]:
    """A login role made by `flowworker db grant`, dropped at the end of the session
    (roles belong to the whole cluster, not to the session's database)."""
    from flowworker.cli import cli

    outcome = CliRunner().invoke(
        cli,
        ["db", "grant", APP_ROLE, "--password", APP_PASSWORD, "--database-url", postgres_url],
    )
    assert outcome.exit_code == 0, outcome.output
    try:
        yield APP_ROLE
    finally:
        with postgres_engine.begin() as connection:
            connection.exec_driver_sql(f"DROP OWNED BY {APP_ROLE}")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {APP_ROLE}")


@pytest.fixture(scope="session")
def app_engine(postgres_url: str, app_role: str) -> Iterator[Engine]:
    """Connections as the application role; one pooled connection, so that a transaction
    setting leaking into the next transaction would show."""
    url = make_url(postgres_url).set(username=app_role, password=APP_PASSWORD)
    engine = create_database_engine(url.render_as_string(False), pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


@dataclass
class Tenant:
    organization_id: uuid.UUID
    flow_execution_id: uuid.UUID
    task_execution_ids: list[uuid.UUID]


def _insert(connection: Connection, table: str, **values: object) -> None:
    """A plain INSERT through the table's own column types."""
    connection.execute(Base.metadata.tables[table].insert().values(**values))


def _seed(owner: Engine, name: str) -> Tenant:
    """As the table owner (not subject to RLS): rows in every tenant table. A new tenant
    table needs its rows here too, or `test_seeded_rows_exist_for_both_organizations`
    fails: that is how this file keeps covering all of them."""
    with transaction(owner) as connection:
        organization_id = ensure_organization(connection, name)
        flow_id = uuid.uuid4()
        _insert(
            connection,
            "flows",
            id=flow_id,
            organization_id=organization_id,
            name="etl",
            version="1",
            definition={},
        )
        if "flow_tasks" in Base.metadata.tables:
            for task_name in ("extract", "load"):
                _insert(
                    connection,
                    "flow_tasks",
                    flow_id=flow_id,
                    task_name=task_name,
                    organization_id=organization_id,
                )
        flow_execution_id = create_flow_execution(connection, organization_id, flow_id=flow_id)
        if "flow_dispatches" in Base.metadata.tables:
            _insert(
                connection,
                "flow_dispatches",
                flow_execution_id=flow_execution_id,
                task_name="extract",
                task_execution_idx=0,
                organization_id=organization_id,
                iteration=0,
                attempt=0,
                superseded=False,
                created_at=utcnow(),
            )
        allocate_task_execution_idx(connection, flow_execution_id, "extract", count=3)
        results = upsert_task_executions(
            connection,
            [
                TaskReport(flow_execution_id, "extract", idx, status)
                for idx in range(3)
                for status in (S.QUEUED, S.RUNNING)
            ],
        )
    return Tenant(
        organization_id,
        flow_execution_id,
        sorted({r.task_execution_id for r in results}),
    )


@pytest.fixture
def tenants(pg_engine: Engine, app_role: str) -> tuple[Tenant, Tenant]:
    return _seed(pg_engine, "org-a"), _seed(pg_engine, "org-b")


def _counts(connection: object, where: str = "") -> dict[str, int]:
    return {
        table: connection.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar_one()  # type: ignore[attr-defined]
        for table in TENANT_TABLES
    }


def _owner_counts(owner: Engine, organization_id: uuid.UUID) -> dict[str, int]:
    with owner.connect() as connection:
        return {
            table: connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE organization_id = :org").bindparams(
                    bindparam("org", type_=Uuid())
                ),
                {"org": organization_id},
            ).scalar_one()
            for table in TENANT_TABLES
        }


def _owner_statuses(owner: Engine, organization_id: uuid.UUID) -> list[str]:
    with owner.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT status FROM task_executions WHERE organization_id = :org"
                    " ORDER BY task_execution_idx"
                ).bindparams(bindparam("org", type_=Uuid())),
                {"org": organization_id},
            ).scalars()
        )


#: the history is append-only: the application role may not UPDATE or DELETE it at all
WRITABLE_TENANT_TABLES = [t for t in TENANT_TABLES if t != "task_execution_events"]

#: rows `_seed` makes per organization; tables not named here get one row
SEEDED = {
    table: {"task_executions": 3, "task_execution_events": 6, "flow_tasks": 2}.get(table, 1)
    for table in TENANT_TABLES
}


def test_the_application_role_is_subject_to_rls(app_engine: Engine, app_role: str) -> None:
    with app_engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles"
                " WHERE rolname = current_user"
            )
        ).one()
    assert (row.name, row.rolsuper, row.rolbypassrls) == (app_role, False, False)


def test_grant_is_idempotent(postgres_url: str, app_role: str) -> None:
    from flowworker.cli import cli

    outcome = CliRunner().invoke(cli, ["db", "grant", app_role, "--database-url", postgres_url])
    assert outcome.exit_code == 0, outcome.output


def test_seeded_rows_exist_for_both_organizations(
    pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    assert _owner_counts(pg_engine, a.organization_id) == SEEDED
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED


def test_an_organization_sees_only_its_own_rows(
    app_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with transaction(app_engine, a.organization_id) as connection:
        assert _counts(connection) == SEEDED
        assert {
            table: connection.execute(
                text(f"SELECT DISTINCT organization_id FROM {table}")
            ).scalar_one()
            for table in TENANT_TABLES
        } == dict.fromkeys(TENANT_TABLES, a.organization_id)
        # even when asked for B's rows by name
        by_id = connection.execute(
            text("SELECT count(*) FROM task_executions WHERE id IN :ids").bindparams(
                bindparam("ids", type_=Uuid(), expanding=True)
            ),
            {"ids": b.task_execution_ids},
        )
        assert by_id.scalar_one() == 0
        assert _counts(
            connection, f"WHERE organization_id = '{b.organization_id}'"
        ) == dict.fromkeys(TENANT_TABLES, 0)


def test_an_organization_cannot_update_another_ones_rows(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with transaction(app_engine, a.organization_id) as connection:
        changed = connection.execute(text("UPDATE task_executions SET status = 'failed'"))
        assert changed.rowcount == 3  # A's three, none of B's
        targeted = connection.execute(
            text(
                f"UPDATE task_executions SET status = 'cancelled'"
                f" WHERE flow_execution_id = '{b.flow_execution_id}'"
            )
        )
        assert targeted.rowcount == 0
        for table in WRITABLE_TENANT_TABLES:
            result = connection.execute(
                text(
                    f"UPDATE {table} SET organization_id = organization_id"
                    f" WHERE organization_id = '{b.organization_id}'"
                )
            )
            assert result.rowcount == 0, table
        counters = connection.execute(text("UPDATE task_index_counters SET next_idx = 0"))
        assert counters.rowcount == 1
    assert _owner_statuses(pg_engine, a.organization_id) == ["failed"] * 3
    assert _owner_statuses(pg_engine, b.organization_id) == ["running"] * 3
    with pg_engine.connect() as connection:
        b_next = connection.execute(
            text(
                "SELECT next_idx FROM task_index_counters"
                f" WHERE organization_id = '{b.organization_id}'"
            )
        ).scalar_one()
    assert b_next == 3


def test_an_organization_cannot_move_its_rows_into_another_one(
    app_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with (
        pytest.raises(ProgrammingError, match="row-level security"),
        transaction(app_engine, a.organization_id) as connection,
    ):
        connection.execute(
            text(f"UPDATE task_executions SET organization_id = '{b.organization_id}'")
        )


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO task_executions (id, organization_id, flow_execution_id, task_name,"
        " task_execution_idx, status, created_at, updated_at)"
        " VALUES (gen_random_uuid(), '{b.organization_id}', '{b.flow_execution_id}', 'x', 9,"
        " 'queued', now(), now())",
        "INSERT INTO flow_executions (id, organization_id, status, created_at, updated_at)"
        " VALUES (gen_random_uuid(), '{b.organization_id}', 'running', now(), now())",
        "INSERT INTO task_index_counters (flow_execution_id, task_name, organization_id,"
        " next_idx) VALUES ('{b.flow_execution_id}', 'y', '{b.organization_id}', 0)",
        "INSERT INTO flows (id, organization_id, name, version, definition)"
        " VALUES (gen_random_uuid(), '{b.organization_id}', 'etl', '2', '{{}}')",
    ],
)
def test_an_organization_cannot_write_rows_for_another_one(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant], statement: str
) -> None:
    a, b = tenants
    with (
        pytest.raises(ProgrammingError, match="row-level security"),
        transaction(app_engine, a.organization_id) as connection,
    ):
        connection.execute(text(statement.format(b=b)))
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED


def test_an_organization_cannot_delete_another_ones_rows(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with transaction(app_engine, a.organization_id) as connection:
        for table in WRITABLE_TENANT_TABLES:
            result = connection.execute(
                text(f"DELETE FROM {table} WHERE organization_id = '{b.organization_id}'")
            )
            assert result.rowcount == 0, table
        # deleting everything it can see removes A's task executions only (and, by
        # cascade, their history)
        assert connection.execute(text("DELETE FROM task_executions")).rowcount == 3
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED
    assert _owner_counts(pg_engine, a.organization_id)["task_executions"] == 0


def test_history_cannot_be_edited_or_deleted_through_the_application_role(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    for statement in (
        "UPDATE task_execution_events SET to_status = 'completed'",
        "DELETE FROM task_execution_events",
    ):
        with (
            pytest.raises(DBAPIError, match=r"permission denied|append-only"),
            transaction(app_engine, a.organization_id) as connection,
        ):
            connection.execute(text(statement))
    assert _owner_counts(pg_engine, a.organization_id) == SEEDED
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED


def test_a_transaction_without_an_organization_sees_and_changes_nothing(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with transaction(app_engine) as connection:
        assert _counts(connection) == dict.fromkeys(TENANT_TABLES, 0)
        assert (
            connection.execute(text("UPDATE task_executions SET status = 'failed'")).rowcount == 0
        )
        assert connection.execute(text("DELETE FROM flow_executions")).rowcount == 0
    with pytest.raises(UnknownFlowExecution), transaction(app_engine) as connection:
        upsert_task_execution(connection, TaskReport(a.flow_execution_id, "t", 0, S.QUEUED))
    assert _owner_counts(pg_engine, a.organization_id) == SEEDED
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED


def test_the_organization_does_not_outlive_its_transaction(
    app_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with transaction(app_engine, a.organization_id) as connection:
        first_backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert _counts(connection) == SEEDED
    # the same pooled connection, a new transaction that sets no organization
    with transaction(app_engine) as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == first_backend
        assert _counts(connection) == dict.fromkeys(TENANT_TABLES, 0)
    # and a failed transaction does not leave it behind either
    with pytest.raises(RuntimeError), transaction(app_engine, a.organization_id):
        raise RuntimeError("rolled back")
    with transaction(app_engine) as connection:
        assert _counts(connection) == dict.fromkeys(TENANT_TABLES, 0)


def test_the_upsert_works_for_the_own_organization(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with transaction(app_engine, a.organization_id) as connection:
        created = upsert_task_execution(
            connection, TaskReport(a.flow_execution_id, "load", 0, S.QUEUED, input={"n": 1})
        )
        done = upsert_task_executions(
            connection,
            [
                TaskReport(a.flow_execution_id, "load", 0, S.COMPLETED, output=[1]),
                TaskReport(a.flow_execution_id, "load", 0, S.RUNNING),
                TaskReport(a.flow_execution_id, "extract", 0, S.COMPLETED),
            ],
        )
        next_idx = allocate_task_execution_idx(connection, a.flow_execution_id, "extract")
    assert created.outcome is UpsertOutcome.CREATED
    assert created.organization_id == a.organization_id
    assert [r.outcome for r in done] == [
        UpsertOutcome.UPDATED,
        UpsertOutcome.REFUSED,
        UpsertOutcome.UPDATED,
    ]
    assert done[1].status is S.COMPLETED
    assert next_idx == 3
    counts = _owner_counts(pg_engine, a.organization_id)
    assert counts["task_executions"] == 4
    assert counts["task_execution_events"] == 6 + 1 + 1 + 1  # created, completed, completed
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED


def test_a_report_naming_another_organizations_flow_execution_is_unknown(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with (
        pytest.raises(UnknownFlowExecution, match=str(b.flow_execution_id)),
        transaction(app_engine, a.organization_id) as connection,
    ):
        # B's existing record (idx 0 is running) and a new key: neither may be touched
        upsert_task_executions(
            connection,
            [
                TaskReport(b.flow_execution_id, "extract", 0, S.COMPLETED),
                TaskReport(b.flow_execution_id, "new", 0, S.QUEUED),
            ],
        )
    with (
        pytest.raises(UnknownFlowExecution),
        transaction(app_engine, a.organization_id) as connection,
    ):
        allocate_task_execution_idx(connection, b.flow_execution_id, "extract")
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED
    assert _owner_statuses(pg_engine, b.organization_id) == ["running"] * 3


def test_the_application_role_looks_organizations_up_but_cannot_create_them(
    app_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    """The plugin resolves its configured organization with `ensure_organization`; through
    the application role that works for an existing one (it once needed INSERT rights
    even then), and creating one is left to the owner."""
    a, b = tenants
    with transaction(app_engine) as connection:
        assert ensure_organization(connection, "org-a") == a.organization_id
        assert ensure_organization(connection, "org-b") == b.organization_id
    with (
        pytest.raises(ProgrammingError, match="permission denied"),
        transaction(app_engine) as connection,
    ):
        ensure_organization(connection, "org-new")


def test_a_single_report_outside_a_transaction_is_scoped_to_its_organization(
    app_engine: Engine, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    """The one-round-trip path (`persistence.upsert_function`) through the application
    role: the organization is set inside the statement, row-level security applies to the
    upsert and to the reads that explain a refusal, and the setting ends with the statement."""
    a, b = tenants
    with autocommit(app_engine) as connection:
        created = upsert_task_execution(
            connection,
            TaskReport(a.flow_execution_id, "load", 0, S.QUEUED),
            organization_id=a.organization_id,
        )
        assert (created.outcome, created.organization_id) == (
            UpsertOutcome.CREATED,
            a.organization_id,
        )
        refused = upsert_task_execution(
            connection,
            TaskReport(a.flow_execution_id, "extract", 0, S.QUEUED),
            organization_id=a.organization_id,
        )
        assert (refused.outcome, refused.status) == (UpsertOutcome.REFUSED, S.RUNNING)
        with pytest.raises(TaskNotInFlow):
            upsert_task_execution(
                connection,
                TaskReport(a.flow_execution_id, "unknown-task", 0, S.QUEUED),
                organization_id=a.organization_id,
            )
        # B's flow execution, reported as A: hidden
        with pytest.raises(UnknownFlowExecution):
            upsert_task_execution(
                connection,
                TaskReport(b.flow_execution_id, "load", 0, S.QUEUED),
                organization_id=a.organization_id,
            )
        # no organization: nothing visible at all
        with pytest.raises(UnknownFlowExecution):
            upsert_task_execution(connection, TaskReport(a.flow_execution_id, "load", 1, S.QUEUED))
        # the setting did not outlive its statement, on this connection
        assert _counts(connection) == dict.fromkeys(TENANT_TABLES, 0)
    # the same pooled connection, now with the function, in a transaction scoped to A
    with transaction(app_engine, a.organization_id) as connection:
        moved = upsert_task_execution(
            connection, TaskReport(a.flow_execution_id, "load", 0, S.RUNNING)
        )
        assert moved.outcome is UpsertOutcome.UPDATED
        with pytest.raises(UnknownFlowExecution):
            upsert_task_execution(connection, TaskReport(b.flow_execution_id, "load", 0, S.QUEUED))
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED
    assert (
        _owner_counts(pg_engine, a.organization_id)["task_executions"]
        == SEEDED["task_executions"] + 1
    )
    assert _owner_statuses(pg_engine, b.organization_id) == ["running"] * 3


def test_the_async_writer_is_scoped_to_its_organization(
    postgres_url: str, app_role: str, pg_engine: Engine, tenants: tuple[Tenant, Tenant]
) -> None:
    """`persistence.upsert_async.AsyncReportWriter` through the application role: the
    same session function, so the same scoping as the store's autocommit path."""
    from persistence.upsert_async import AsyncReportWriter

    a, b = tenants
    url = make_url(postgres_url).set(username=app_role, password=APP_PASSWORD)

    async def scenario() -> list[object]:
        writer = AsyncReportWriter(url.render_as_string(False), size=1)
        seen: list[object] = []
        try:
            for report in [
                TaskReport(a.flow_execution_id, "load", 0, S.QUEUED),
                TaskReport(a.flow_execution_id, "extract", 0, S.QUEUED),
                TaskReport(a.flow_execution_id, "unknown-task", 0, S.QUEUED),
                TaskReport(b.flow_execution_id, "load", 0, S.QUEUED),
            ]:
                try:
                    result, _ = await writer.upsert_task_execution_record(report, a.organization_id)
                    seen.append((result.outcome, result.status, result.organization_id))
                except (TaskNotInFlow, UnknownFlowExecution) as exc:
                    seen.append(type(exc))
        finally:
            await writer.close()
        return seen

    assert asyncio.run(scenario()) == [
        (UpsertOutcome.CREATED, S.QUEUED, a.organization_id),
        (UpsertOutcome.REFUSED, S.RUNNING, a.organization_id),
        TaskNotInFlow,
        UnknownFlowExecution,
    ]
    assert _owner_counts(pg_engine, b.organization_id) == SEEDED
    assert _owner_statuses(pg_engine, b.organization_id) == ["running"] * 3
