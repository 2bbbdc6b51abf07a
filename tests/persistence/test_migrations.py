"""The Alembic migrations build exactly the schema the models describe, on both backends,
and the rules that live only in the database (checks, history trigger, row-level security)
hold against hand-written SQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import (
    CheckConstraint,
    Engine,
    Integer,
    String,
    Uuid,
    bindparam,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from persistence.database import create_database_engine
from persistence.models import TENANT_TABLES, Base, UTCDateTime
from persistence.schema import (
    downgrade_database,
    fetch_schema_revision,
    head_revision,
    upgrade_database,
)
from persistence.status import ExecutionStatus
from tests.conftest import SESSION_TAG
from tests.servers import POSTGRES_ADMIN_URL, require

BACKENDS = ["postgres", "sqlite"]


def _admin_dsn() -> str:
    return make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql").render_as_string(False)


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (migrations here go up and down; the session's
    shared database stays untouched)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    require("PostgreSQL", POSTGRES_ADMIN_URL, 5432)
    import psycopg

    name = f"flowworker_mig_{SESSION_TAG}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(_admin_dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_engine(fresh_url: str) -> Iterator[Engine]:
    engine = create_database_engine(fresh_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(fresh_engine: Engine) -> Engine:
    upgrade_database(fresh_engine)
    return fresh_engine


def schema_diff(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def check_constraints(engine: Engine) -> dict[str, dict[str, str]]:
    """table -> {constraint name: SQL text} as the database reports them."""
    inspector = inspect(engine)
    return {
        table: {str(ck["name"]): " ".join(ck["sqltext"].split()) for ck in found}
        for table in Base.metadata.tables
        if (found := inspector.get_check_constraints(table))
    }


def model_check_constraints() -> dict[str, dict[str, str]]:
    return {
        name: {str(ck.name): " ".join(str(ck.sqltext).split()) for ck in checks}
        for name, table in Base.metadata.tables.items()
        if (checks := [c for c in table.constraints if isinstance(c, CheckConstraint)])
    }


def assert_same_check_constraints(engine: Engine) -> None:
    """Autogenerate does not compare CHECK constraints, so compare them here: by name on
    both backends, and by text on SQLite (PostgreSQL rewrites the expression; the
    behaviour tests below cover it there)."""
    found, expected = check_constraints(engine), model_check_constraints()
    assert {t: set(c) for t, c in found.items()} == {t: set(c) for t, c in expected.items()}
    if engine.dialect.name == "sqlite":
        assert found == expected


def trigger_names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        return {row[0] for row in connection.execute(text(query))}


def user_table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


# --- the migrations build the models' schema -------------------------------------------------


def test_migrations_build_the_models_schema(migrated: Engine) -> None:
    assert schema_diff(migrated) == []
    assert user_table_names(migrated) == set(Base.metadata.tables)
    assert_same_check_constraints(migrated)
    assert fetch_schema_revision(migrated) == head_revision(migrated)


def test_schema_comparison_notices_a_difference(migrated: Engine) -> None:
    """The comparison above has teeth: a missing index shows up in it."""
    with migrated.begin() as connection:
        connection.execute(text("DROP INDEX ix_task_executions_celery_task_id"))
    diff = schema_diff(migrated)
    assert [entry[0] for entry in diff] == ["add_index"]
    assert diff[0][1].name == "ix_task_executions_celery_task_id"


def test_upgrade_is_idempotent_and_keeps_data(migrated: Engine) -> None:
    with migrated.begin() as connection:
        connection.execute(
            text("INSERT INTO organizations (id, name) VALUES (:id, 'kept')").bindparams(
                bindparam("id", type_=Uuid())
            ),
            {"id": uuid.uuid4()},
        )
    upgrade_database(migrated)
    upgrade_database(migrated)
    assert fetch_schema_revision(migrated) == head_revision(migrated)
    assert schema_diff(migrated) == []
    with migrated.connect() as connection:
        assert connection.execute(text("SELECT name FROM organizations")).scalars().all() == [
            "kept"
        ]


def test_downgrade_to_base_then_upgrade_again(migrated: Engine) -> None:
    downgrade_database(migrated, "base")
    assert fetch_schema_revision(migrated) is None
    assert user_table_names(migrated) == set()
    assert trigger_names(migrated) == set()
    if migrated.dialect.name == "postgresql":
        with migrated.connect() as connection:
            functions = connection.execute(
                text("SELECT proname FROM pg_proc WHERE proname LIKE 'flowworker%'")
            ).all()
        assert functions == []

    upgrade_database(migrated)
    assert fetch_schema_revision(migrated) == head_revision(migrated)
    assert schema_diff(migrated) == []
    assert_same_check_constraints(migrated)
    assert trigger_names(migrated) >= {"task_execution_events_append_only"}
    # and the rebuilt trigger records history again
    organization_id, flow_execution_id = _insert_flow_execution(migrated)
    with migrated.begin() as connection:
        connection.execute(*_task_execution_insert(organization_id, flow_execution_id))
    with migrated.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM task_execution_events")).scalar() == 1


def test_cli_upgrade_uses_the_environment_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowworker.cli import cli

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("FLOWWORKER_DATABASE_URL", url)
    for _ in range(2):  # the second run finds a current database and leaves it alone
        outcome = CliRunner().invoke(cli, ["db", "upgrade"])
        assert outcome.exit_code == 0, outcome.output
    engine = create_database_engine(url)
    try:
        assert f"is at revision {head_revision(engine)}" in outcome.output
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


# --- rules the database itself enforces --------------------------------------------------------


def _insert_flow_execution(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    organization_id, flow_execution_id = uuid.uuid4(), uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO organizations (id, name) VALUES (:id, :name)").bindparams(
                bindparam("id", type_=Uuid())
            ),
            {"id": organization_id, "name": f"org-{organization_id}"},
        )
        connection.execute(
            text(
                "INSERT INTO flow_executions (id, organization_id, status, created_at, updated_at)"
                " VALUES (:id, :org, 'running', :now, :now)"
            ).bindparams(
                bindparam("id", type_=Uuid()),
                bindparam("org", type_=Uuid()),
                bindparam("now", type_=UTCDateTime()),
            ),
            {"id": flow_execution_id, "org": organization_id, "now": now},
        )
    return organization_id, flow_execution_id


def _task_execution_insert(
    organization_id: uuid.UUID, flow_execution_id: uuid.UUID, **overrides: Any
) -> tuple[Any, dict[str, Any]]:
    """A hand-written INSERT of one task execution; `overrides` replace column values."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "org": organization_id,
        "fe": flow_execution_id,
        "task_name": "t",
        "idx": 0,
        "status": "queued",
        "now": dt.datetime.now(dt.UTC),
        **overrides,
    }
    statement = text(
        "INSERT INTO task_executions (id, organization_id, flow_execution_id, task_name,"
        " task_execution_idx, status, created_at, updated_at)"
        " VALUES (:id, :org, :fe, :task_name, :idx, :status, :now, :now)"
    ).bindparams(
        bindparam("id", type_=Uuid()),
        bindparam("org", type_=Uuid()),
        bindparam("fe", type_=Uuid()),
        bindparam("task_name", type_=String()),
        bindparam("idx", type_=Integer()),
        bindparam("now", type_=UTCDateTime()),
    )
    return statement, values


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"task_name": ""}, "ck_task_executions_task_name_length"),
        ({"task_name": "x" * 201}, "ck_task_executions_task_name_length"),
        ({"idx": -1}, "ck_task_executions_task_execution_idx_non_negative"),
        ({"status": "bogus"}, "ck_task_executions_status_known"),
        ({"status": "QUEUED"}, "ck_task_executions_status_known"),
    ],
)
def test_database_rejects_a_hand_written_invalid_row(
    migrated: Engine, overrides: dict[str, Any], constraint: str
) -> None:
    organization_id, flow_execution_id = _insert_flow_execution(migrated)
    statement, values = _task_execution_insert(organization_id, flow_execution_id, **overrides)
    # On PostgreSQL varchar(200) may object to 201 characters before the check does.
    expected = (IntegrityError, DBAPIError)
    with pytest.raises(expected) as caught, migrated.begin() as connection:
        connection.execute(statement, values)
    message = str(caught.value)
    assert constraint in message or (
        overrides.get("task_name") == "x" * 201 and "too long" in message
    ), message
    with migrated.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM task_executions")).scalar() == 0


def test_database_accepts_the_boundary_values(migrated: Engine) -> None:
    organization_id, flow_execution_id = _insert_flow_execution(migrated)
    with migrated.begin() as connection:
        connection.execute(
            *_task_execution_insert(organization_id, flow_execution_id, task_name="x" * 200)
        )
        connection.execute(*_task_execution_insert(organization_id, flow_execution_id, idx=0))


def test_database_accepts_every_status_of_the_enum(migrated: Engine) -> None:
    """The migration spells the status list out (frozen on purpose); it must still match
    the enum, or a new status would be refused by the database."""
    organization_id, flow_execution_id = _insert_flow_execution(migrated)
    with migrated.begin() as connection:
        for idx, status in enumerate(ExecutionStatus):
            connection.execute(
                *_task_execution_insert(
                    organization_id, flow_execution_id, idx=idx, status=status.value
                )
            )


def test_duplicate_key_is_rejected(migrated: Engine) -> None:
    organization_id, flow_execution_id = _insert_flow_execution(migrated)
    with migrated.begin() as connection:
        connection.execute(*_task_execution_insert(organization_id, flow_execution_id))
    with pytest.raises(IntegrityError, match=r"uq_task_executions|UNIQUE"), migrated.begin() as c:
        c.execute(*_task_execution_insert(organization_id, flow_execution_id))


def test_flow_execution_status_is_checked(migrated: Engine) -> None:
    _, flow_execution_id = _insert_flow_execution(migrated)
    with (
        pytest.raises(IntegrityError, match="ck_flow_executions_status_known"),
        migrated.begin() as connection,
    ):
        connection.execute(
            text("UPDATE flow_executions SET status = 'bogus' WHERE id = :id").bindparams(
                bindparam("id", type_=Uuid())
            ),
            {"id": flow_execution_id},
        )


def test_history_trigger_records_hand_written_changes_and_refuses_edits(
    migrated: Engine,
) -> None:
    organization_id, flow_execution_id = _insert_flow_execution(migrated)
    with migrated.begin() as connection:
        connection.execute(*_task_execution_insert(organization_id, flow_execution_id))
        # a hand-written status change still leaves its trace
        connection.execute(text("UPDATE task_executions SET status = 'running', version = 2"))
        # a change that keeps the status is not a status event
        connection.execute(text("UPDATE task_executions SET worker = 'w1'"))
    with migrated.connect() as connection:
        events = connection.execute(
            text("SELECT from_status, to_status, version FROM task_execution_events ORDER BY id")
        ).all()
    assert [tuple(e) for e in events] == [(None, "queued", 1), ("queued", "running", 2)]

    with (
        pytest.raises(DBAPIError, match="append-only"),
        migrated.begin() as connection,
    ):
        connection.execute(text("UPDATE task_execution_events SET to_status = 'completed'"))
    with migrated.connect() as connection:
        to_statuses = connection.execute(
            text("SELECT to_status FROM task_execution_events ORDER BY id")
        ).scalars()
        assert list(to_statuses) == ["queued", "running"]


# row-level security exists only on PostgreSQL
@pytest.mark.parametrize("fresh_url", ["postgres"], indirect=True)
def test_row_level_security_is_enabled_on_every_tenant_table(fresh_engine: Engine) -> None:
    upgrade_database(fresh_engine)
    with fresh_engine.connect() as connection:
        enabled = {
            row.relname: row.relrowsecurity
            for row in connection.execute(
                text("SELECT relname, relrowsecurity FROM pg_class WHERE relkind = 'r'")
            )
        }
        policies = {
            row.tablename
            for row in connection.execute(
                select(text("tablename")).select_from(text("pg_policies"))
            )
        }
    assert {table: enabled[table] for table in TENANT_TABLES} == dict.fromkeys(TENANT_TABLES, True)
    assert policies == set(TENANT_TABLES)
    assert enabled["organizations"] is False
