"""Fixtures over the real servers: a fresh PostgreSQL database per test session (so that
parallel sessions never meet), a SQLite file per session, and tables emptied between tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from persistence.database import create_database_engine
from persistence.models import Base
from persistence.schema import upgrade_database
from tests.servers import POSTGRES_ADMIN_URL, require

SESSION_TAG = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of an empty database created for this test session, dropped at its end."""
    require("PostgreSQL", POSTGRES_ADMIN_URL, 5432)
    import psycopg

    name = f"flowworker_test_{SESSION_TAG}"
    admin = make_url(POSTGRES_ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_database_engine(postgres_url)
    upgrade_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("sqlite") / "flowworker.db"
    engine = create_database_engine(f"sqlite:///{path}")
    upgrade_database(engine)
    yield engine
    engine.dispose()


def empty_tables(engine: Engine) -> None:
    names = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(names)} CASCADE"))
        else:
            for name in names:
                connection.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The same test on both backends, starting from empty tables."""
    engine: Engine = request.getfixturevalue(f"{request.param}_engine")
    empty_tables(engine)
    return engine


@pytest.fixture
def pg_engine(postgres_engine: Engine) -> Iterator[Engine]:
    """PostgreSQL only (row-level security, concurrency), starting from empty tables."""
    empty_tables(postgres_engine)
    return postgres_engine
