"""Engines and transactions. The caller owns the transaction; repository functions only
take a `Connection`.
"""

from __future__ import annotations

import functools
import os
import select
import threading
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError

from persistence.ddl import ORGANIZATION_SETTING
from persistence.errors import ConfigurationError
from persistence.jsonvalue import DEFAULT_MAX_BYTES, encode_json

DEFAULT_DATABASE_URL = "sqlite:///flowworker.db"


def normalize_url(url: str) -> str:
    """Accept the URLs people paste: postgres:// and postgresql:// mean psycopg 3 here."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_database_engine(
    url: str = DEFAULT_DATABASE_URL,
    *,
    json_max_bytes: int = DEFAULT_MAX_BYTES,
    pool_size: int = 5,
    **engine_options: Any,
) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or SQLite, with flowworker's JSON encoding.

    A pooled PostgreSQL connection is checked on checkout: with psycopg, without a round trip
    (`_refuse_closed_connection`: did the server close it?); with another driver, or when
    asked with `pool_pre_ping=True`, with a ping (one round trip per transaction)."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"not a database URL: {url!r} ({exc})") from exc
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            f"flowworker supports PostgreSQL and SQLite, not {backend!r} (from {url!r})"
        )
    options: dict[str, Any] = {
        "json_serializer": functools.partial(encode_json, max_bytes=json_max_bytes),
        **engine_options,
    }
    if backend == "postgresql":
        options.setdefault("pool_size", pool_size)
        options.setdefault("pool_pre_ping", parsed.get_driver_name() != "psycopg")
    else:
        options.setdefault("connect_args", {"timeout": 30})
    engine = _engine(url, options)
    if backend == "postgresql" and not _SIBLING_UNSAFE_OPTIONS & options.keys():
        _made_with[engine] = _Recipe(url, options, _listener_counts(engine))
        event.listen(engine, "engine_disposed", _dispose_sibling)
    return engine


def _engine(url: str, options: dict[str, Any]) -> Engine:
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    elif not options["pool_pre_ping"] and engine.dialect.driver == "psycopg":
        event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


# -- autocommit's pool: how an engine was made, and its sibling ------------------------------

# options that would make a second pool something else than more connections like the first's
_SIBLING_UNSAFE_OPTIONS = {"creator", "poolclass", "pool", "isolation_level", "execution_options"}


@dataclass(frozen=True)
class _Recipe:
    url: str
    options: dict[str, Any]
    listeners: tuple[int, ...]


@dataclass(frozen=True)
class _Sibling:
    engine: Engine
    pid: int


_made_with: weakref.WeakKeyDictionary[Engine, _Recipe] = weakref.WeakKeyDictionary()
_autocommit_siblings: weakref.WeakKeyDictionary[Engine, _Sibling] = weakref.WeakKeyDictionary()
_siblings_lock = threading.Lock()


def _listener_counts(engine: Engine) -> tuple[int, ...]:
    """How many listeners the events that shape a connection's session have: one added
    after `create_database_engine` (a `SET ROLE` on connect, say) would not be on a
    sibling's connections."""
    pool, dialect = engine.pool.dispatch, engine.dialect.dispatch
    return (
        len(pool.connect),
        len(pool.first_connect),
        len(pool.checkout),
        len(pool.checkin),
        len(pool.reset),
        len(dialect.do_connect),
        len(engine.dispatch.engine_connect),
    )


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A checkout check that costs no round trip (a ping costs one, and a tenth of a short
    transaction's CPU): see `server_closed`. Closed: SQLAlchemy discards every older pooled
    connection, as after a failed ping, and checks out a new one."""
    if server_closed(dbapi_connection):
        raise InvalidatePoolError("the server closed this pooled connection")


def server_closed(dbapi_connection: Any) -> bool:
    """Whether the server closed this idle psycopg connection (sync or async), without a
    round trip: an idle connection has nothing to read unless the server closed it (a
    restart, `pg_terminate_backend`: a goodbye message, then the end of the stream) or
    reported a parameter change. A server that vanished without closing the connection is
    not caught here (a ping would wait for the network's timeout too)."""
    import psycopg

    pgconn = dbapi_connection.pgconn
    if not dbapi_connection.closed and pgconn.status == psycopg.pq.ConnStatus.OK:
        poll = select.poll()
        poll.register(pgconn.socket, select.POLLIN)
        # a parameter change is read and the connection kept; still more to read after a
        # few reads is no idle connection either
        for _ in range(4):
            if not poll.poll(0):
                return False
            try:
                pgconn.consume_input()
                pgconn.is_busy()  # parses what was read
            except psycopg.OperationalError:
                break  # the end of the stream
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                break
    return True


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 30000")
    if not _is_memory_database(dbapi_connection):
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _is_memory_database(dbapi_connection: Any) -> bool:
    cursor = dbapi_connection.cursor()
    try:
        rows = cursor.execute("PRAGMA database_list").fetchall()
    finally:
        cursor.close()
    return any(row[1] == "main" and not row[2] for row in rows)


def set_organization(connection: Connection, organization_id: uuid.UUID) -> None:
    """Scope the current transaction to one organization (PostgreSQL row-level security)."""
    if connection.dialect.name != "postgresql":
        return
    value = str(uuid.UUID(str(organization_id)))
    driver_connection = connection.connection.driver_connection
    if connection.dialect.driver == "psycopg" and driver_connection is not None:
        # straight on the DBAPI connection (in the same transaction): SQLAlchemy's
        # per-statement machinery costs more CPU than this statement (bench/upsert.py)
        with driver_connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", (ORGANIZATION_SETTING, value))
        return
    connection.execute(
        text("SELECT set_config(:name, :value, true)"),
        {"name": ORGANIZATION_SETTING, "value": value},
    )


@contextmanager
def transaction(engine: Engine, organization_id: uuid.UUID | None = None) -> Iterator[Connection]:
    """Begin a transaction, scoped to `organization_id` when given; commit on success."""
    with engine.begin() as connection:
        if organization_id is not None:
            set_organization(connection, organization_id)
        yield connection


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection outside any transaction: each statement commits on its own.

    For work that is one atomic statement, such as one report
    (`persistence.upsert.upsert_task_execution(connection, report, organization_id=...)`):
    on PostgreSQL that is one round trip, without BEGIN, the organization setting and
    COMMIT around it."""
    sibling = _autocommit_sibling(engine)
    if sibling is not None:
        with sibling.connect() as connection:
            yield connection
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection


def _autocommit_sibling(engine: Engine) -> Engine | None:
    """A second pool beside `engine`'s, of connections that stay in autocommit: switching a
    pooled connection there and back costs ~40 us of CPU per checkout (half of what a
    report costs the client). Only for PostgreSQL engines `create_database_engine` made,
    with no listener added since; one per process (a fork's child makes its own)."""
    sibling = _autocommit_siblings.get(engine)
    if sibling is not None and sibling.pid == os.getpid():
        return sibling.engine
    recipe = _made_with.get(engine)
    if recipe is None or _listener_counts(engine) != recipe.listeners:
        return None
    with _siblings_lock:
        sibling = _autocommit_siblings.get(engine)
        if sibling is None or sibling.pid != os.getpid():
            if sibling is not None:  # the parent's: its connections are not this process's
                sibling.engine.dispose(close=False)
            made = _engine(recipe.url, {**recipe.options, "isolation_level": "AUTOCOMMIT"})
            sibling = _Sibling(made, os.getpid())
            _autocommit_siblings[engine] = sibling
    return sibling.engine


def _dispose_sibling(engine: Engine) -> None:
    """`engine.dispose()` lets go of its sibling too, closing its connections when they are
    this process's (after a fork they are the parent's: `dispose(close=False)`)."""
    with _siblings_lock:
        sibling = _autocommit_siblings.pop(engine, None)
    if sibling is not None:
        sibling.engine.dispose(close=sibling.pid == os.getpid())
