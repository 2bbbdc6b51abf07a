"""The `flowworker_stats` remote-control command: how each worker's recording path is doing.

`celery inspect flowworker_stats` (or `flowworker status`) asks every worker. The command
runs in the worker's main process, but with the prefork pool the records are written by the
pool children, each with its own recorder and notifier. Children cannot be asked directly,
so each child (and the worker's writer process, `flowworker.journal_writer`, which does the
writing when it runs) writes its counters to a small file beside the journals every few
seconds (`<spool_dir>/stats/<host>.<pid>.json`) and the main process reads those files:
the figures of a child are at most `STATS_INTERVAL` seconds old (`age_s` says how old), and
a child that has not written yet is listed under `missing`. Reports not yet in the database
are counted from the journal files themselves (`flowworker.journal`; a live process's file
is emptied whenever everything in it is committed, so its lines are what still waits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from celery import signals as celery_signals
from celery.worker.control import inspect_command

from flowworker.journal import SUFFIX as JOURNAL_SUFFIX
from flowworker.journal import read_committed, stats_path
from flowworker.plugin import Plugin, active_plugin
from flowworker.writer_process import writer_process_pid

log = logging.getLogger(__name__)

COMMAND = "flowworker_stats"
STATS_INTERVAL = 5.0

_registered = False
_register_lock = threading.Lock()


def register_operations() -> None:
    """Register the remote-control command, the pool children's stats writer and the reaper
    task (called by `flowworker.install`; safe to call again)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        inspect_command(name=COMMAND)(flowworker_stats)
        celery_signals.worker_process_init.connect(
            _start_stats_writer, weak=False, dispatch_uid="flowworker.stats_writer"
        )
        import flowworker.reaper  # noqa: F401  (registers the reap task on every app)

        _registered = True


def process_stats(plugin: Plugin) -> dict[str, Any]:
    """This process's recorder and notifier counters (no I/O, never starts a thread)."""
    recorder = plugin.recorder
    stats: dict[str, Any] = dataclasses.asdict(recorder.stats)
    # The journal and the notifier exist only once this process has recorded something;
    # asking for them must not build them (nor start the writer thread).
    started = recorder._pid == os.getpid()
    stats["backlog_bytes"] = recorder.backlog() if started else 0
    notifier = getattr(recorder, "_notifier", None) if started else None
    if notifier is not None and hasattr(notifier, "stats"):
        notified = notifier.stats()
        stats["notifications_published"] = notified.published
        stats["notifications_dropped"] = notified.dropped
        stats["notification_errors"] = notified.errors
        stats["notifications_connected"] = notified.connected
    else:
        stats["notifications_published"] = stats["notifications_dropped"] = None
    stats["pid"] = os.getpid()
    return stats


def _start_stats_writer(**_: Any) -> None:
    """In a pool child: keep this child's counters on disk for the main process to read."""
    plugin = active_plugin()
    if plugin is None:
        return
    thread = threading.Thread(
        target=_write_stats_forever, args=(plugin,), name="flowworker-stats", daemon=True
    )
    thread.start()


def _write_stats_forever(plugin: Plugin) -> None:
    path = stats_path(plugin.settings.spool_dir, os.getpid())
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            document = {**process_stats(plugin), "written_at": time.time()}
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(document))
            temporary.replace(path)  # readers never see half a file
        except Exception:
            log.debug("flowworker: could not write the stats file %s", path, exc_info=True)
        time.sleep(STATS_INTERVAL)


def count_journaled(spool_dir: Path, pids: set[int] | None = None) -> int:
    """Reports in the journal files of this machine (of `pids` only, when given): those not
    yet in the database, give or take a batch being committed right now."""
    if not spool_dir.exists():
        return 0
    total = 0
    host = socket.gethostname()
    for path in spool_dir.glob(f"*{JOURNAL_SUFFIX}"):
        if pids is not None and not _journal_of(path.name, host, pids):
            continue
        with contextlib.suppress(OSError), path.open("rb") as handle:
            handle.seek(read_committed(path))  # a tailed journal keeps what is written
            total += sum(1 for _ in handle)
    return total


def _journal_of(name: str, host: str, pids: set[int]) -> bool:
    # journals are named <host>.<pid>.<random>.journal.jsonl (flowworker.journal)
    parts = name[: -len(JOURNAL_SUFFIX)].rsplit(".", 2)
    return len(parts) == 3 and parts[0] == host and parts[1].isdigit() and int(parts[1]) in pids


def _pool_pids(state: Any) -> list[int]:
    pool = getattr(getattr(state, "consumer", None), "pool", None)
    processes = getattr(getattr(pool, "_pool", None), "_pool", None)  # billiard's Pool
    if not processes:
        return []
    return [process.pid for process in processes if getattr(process, "pid", None)]


def flowworker_stats(state: Any, **_: Any) -> dict[str, Any]:
    """flowworker recording health of this worker: recorder, notifier, journal per process."""
    plugin = active_plugin()
    if plugin is None:
        return {"installed": False}
    now = time.time()
    processes = [{"role": "main", **process_stats(plugin), "age_s": 0.0}]
    missing: list[int] = []
    child_pids = _pool_pids(state)
    writer_pid = writer_process_pid()
    roles = [("child", pid) for pid in child_pids]
    if writer_pid is not None:
        roles.append(("writer", writer_pid))
    for role, pid in roles:
        try:
            document = json.loads(stats_path(plugin.settings.spool_dir, pid).read_text())
        except (OSError, ValueError):
            missing.append(pid)
            continue
        age = round(now - float(document.pop("written_at", now)), 1)
        processes.append({"role": role, **document, "age_s": age})
    for process in processes:
        process["journal_lines"] = count_journaled(plugin.settings.spool_dir, {process["pid"]})
    totals = {
        name: sum(process.get(name) or 0 for process in processes)
        for name in (
            "recorded",
            "written",
            "rejected",
            "lost",
            "errors",
            "notifications_dropped",
            "backlog_bytes",
            "journal_lines",
        )
    }
    last_writes = [p["last_write_at"] for p in processes if p.get("last_write_at")]
    return {
        "installed": True,
        "pid": os.getpid(),
        "pool_processes": len(child_pids) or None,
        "processes": processes,
        "missing": missing,
        "totals": totals,
        "last_write_at": max(last_writes) if last_writes else None,
        "stats_interval_s": STATS_INTERVAL,
    }
