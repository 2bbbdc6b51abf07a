"""CPU time of processes, read from /proc (Linux): what the benchmarks print beside their
rates, which on a shared machine follow the other load far more than CPU per call does."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psycopg


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (0 for those gone or unreadable)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The direct child processes of `pid` (a Celery worker's pool, uvicorn's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in children.split()]


def backend_pids(connection: psycopg.Connection[object], database: str) -> list[int]:
    """The PostgreSQL backends connected to `database`, other than `connection`'s own."""
    rows = connection.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return [int(pid) for (pid,) in rows]


class BackendSampler:
    """CPU of every backend of `database` during a `with` block, including backends that
    come and go inside it (a publisher's), sampled every `interval` seconds: the activity
    of a backend in its last interval before it goes away is missed."""

    def __init__(self, dsn: str, database: str, interval: float = 0.1) -> None:
        self.dsn, self.database, self.interval = dsn, database, interval
        self._baseline: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackendSampler:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            for pid in backend_pids(connection, self.database):
                self._baseline[pid] = self._last[pid] = cpu_seconds([pid])
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            while True:
                for pid in backend_pids(connection, self.database):
                    seconds = cpu_seconds([pid])
                    if seconds:
                        self._last[pid] = seconds
                if self._stop.wait(self.interval):
                    return

    def cpu_seconds(self) -> float:
        return sum(seconds - self._baseline.get(pid, 0.0) for pid, seconds in self._last.items())
