"""Telling an outage (retry later, in order) from a report the database refuses (isolate
it, write the rest): the recorder's writer decides with `database_unavailable`."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

#: SQLSTATE class 54, "program limit exceeded" (a value too large for an index, a
#: statement too complex): psycopg files it under OperationalError, but the same batch
#: would fail the same way forever, so it is about the data.
_LIMIT_EXCEEDED_CLASS = "54"


def database_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached, or is going away: retry later. Anything else the
    database raises is about the data, and retrying the same batch would never end."""
    if isinstance(exc, DBAPIError):
        if _sqlstate(exc.orig).startswith(_LIMIT_EXCEEDED_CLASS):
            return False
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    try:  # the fast path runs statements on psycopg's own cursor: its errors are not wrapped
        import psycopg
    except ImportError:  # pragma: no cover - SQLite only
        return False
    if _sqlstate(exc).startswith(_LIMIT_EXCEEDED_CLASS):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _sqlstate(exc: BaseException | None) -> str:
    return str(getattr(exc, "sqlstate", None) or "")
