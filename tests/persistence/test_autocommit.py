"""`autocommit(engine)`: connections of a pool of their own that stay in autocommit, beside
the engine's transactional pool, which they leave as it is."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, func, select, text

from persistence.database import autocommit, create_database_engine, dispose, transaction
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


def test_dispose_closes_both_pools(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url)
    with autocommit(engine) as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with transaction(engine) as connection:
        connection.execute(text("SELECT 1"))
    dispose(engine)
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
    dispose(engine)
