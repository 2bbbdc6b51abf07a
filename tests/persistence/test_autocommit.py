"""`autocommit(engine)`: connections of a pool of their own that stay in autocommit, beside
the engine's transactional pool, which they leave as it is."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text

from persistence.database import autocommit, create_database_engine, transaction
from persistence.models import Organization


def _organizations(engine: Engine) -> int:
    with transaction(engine) as connection:
        return int(connection.execute(select(func.count()).select_from(Organization)).scalar_one())


def _insert_then_fail(engine: Engine) -> None:
    with transaction(engine) as connection:
        connection.execute(
            text("INSERT INTO organizations (id, name) VALUES (:id, 'rolled back')"),
            {"id": f"{99:032x}"},
        )
        raise RuntimeError("undone")


def test_each_statement_commits_on_its_own_and_transactions_still_roll_back(
    engine: Engine,
) -> None:
    insert = text("INSERT INTO organizations (id, name) VALUES (:id, :name)")
    for round_number in range(3):  # the same pooled connections, again and again
        with autocommit(engine) as connection:
            connection.execute(insert, {"id": f"{round_number:032x}", "name": f"o{round_number}"})
            # committed already: another connection sees it inside this block
            assert _organizations(engine) == round_number + 1
        with pytest.raises(RuntimeError, match="undone"):
            _insert_then_fail(engine)
        assert _organizations(engine) == round_number + 1


def test_engine_dispose_closes_both_pools(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url)
    with autocommit(engine) as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with transaction(engine) as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()
    deadline = time.monotonic() + 5  # a backend leaves pg_stat_activity as it exits
    while True:
        with transaction(engine) as connection:
            still_open = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
            ).scalar_one()
        if still_open == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert still_open == 0, "the autocommit pool's connection is closed"
    engine.dispose()


def _backend(engine: Engine) -> int:
    with autocommit(engine) as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_forked_child_gets_connections_of_its_own(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url)
    parent = _backend(engine)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            engine.dispose(close=False)  # SQLAlchemy's recipe for a forked child
            os.write(write, str(_backend(engine)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        in_child = int(pipe.read() or 0)
    os.waitpid(child, 0)
    assert in_child not in (0, parent)
    assert _backend(engine) == parent, "the parent's connection is still its own, and open"
    engine.dispose()


def test_a_listener_added_later_applies_to_autocommit_connections_too(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url)

    @event.listens_for(engine, "connect")
    def name_the_session(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET application_name = 'tagged'")
        dbapi_connection.commit()

    with autocommit(engine) as connection:
        assert connection.execute(text("SHOW application_name")).scalar_one() == "tagged"
    engine.dispose()


def test_an_in_memory_sqlite_database_is_the_same_for_autocommit() -> None:
    engine = create_database_engine("sqlite://")
    with transaction(engine) as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    with autocommit(engine) as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
        assert connection.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    engine.dispose()
