"""Fault injection: does every task end with exactly one correct record, whatever breaks?

    .venv/bin/python bench/faults.py [--tasks 500] [--task-seconds 0.05] [--only NAME ...]

Private servers only (never the shared ones): a redis-server on a free port (broker and
notifications, AOF on so that a restart keeps the queue, as a production broker would) and
an initdb'd PostgreSQL (tests/pg_cluster.py). Per scenario: a fresh queue, one prefork
worker (concurrency 2), --tasks tasks published up front (90% `acks_late` +
`reject_on_worker_lost`, 10% acknowledged on receipt), a fault injected once the run is
under way, then: wait until every task has a finished record and the journals are empty (or
nothing moved for a while), run the reaper, and count.

Columns: in_flight = tasks executing when the fault hit (`inspect active`); done = completed;
fault = records failed by the fault itself (a lost pool child's WorkerLostError, or reaped
after the whole worker died); recorder = records failed for any other reason (a task
broken by recording: must be 0); missing = published tasks without a finished record;
dup = extra records for one (celery task id, attempt); running = records still queued or
running after reaping; db_errors / lost / dropped = the pool children's recorder errors
(database unavailable), reports lost (journal full) and notifications dropped, from their
`flowworker_stats` files; settled_s = from the first publish to the last record finished.

This module is also the workers' Celery app (`celery -A faults worker`, bench/ on the path).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

import flowworker  # noqa: E402
from flowworker.plugin import active_plugin  # noqa: E402

VISIBILITY_TIMEOUT = 15  # seconds before Redis hands an unacknowledged message out again

app = Celery("flowworker_faults")
app.conf.update(
    broker_url=os.environ.get("FW_FAULTS_BROKER_URL", "redis://127.0.0.1:1/0"),
    task_default_queue=os.environ.get("FW_FAULTS_QUEUE", "faults"),
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 2,
        "unacked_restore_throttle": 1,
    },
    worker_hijack_root_logger=False,
)
flowworker.install(app)


@app.task(name="faults.work", acks_late=True, reject_on_worker_lost=True)
def work(n: int, seconds: float) -> int:
    time.sleep(seconds)
    return n


@app.task(name="faults.work_acked_early")
def work_acked_early(n: int, seconds: float) -> int:
    time.sleep(seconds)
    return n


# -- the servers and the worker -----------------------------------------------------------


class PrivateRedis:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        _wait(lambda: _quietly(client.ping), 30, "redis to start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # a graceful shutdown writes the AOF out
            self.process.wait(30)
            self.process = None


class Worker:
    #: every worker this run started, so that a crash of the bench leaves none behind
    started: list[Worker] = []

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.hostname = f"{name}-{uuid.uuid4().hex[:6]}@127.0.0.1"
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "faults",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--hostname",
                self.hostname,
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT / "bench",
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        Worker.started.append(self)
        _wait(lambda: self.process.poll() is None and self.child_pids(), 60, "the worker")
        time.sleep(1.0)

    def child_pids(self) -> list[int]:
        output = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        return [int(pid) for pid in output.split()]

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def _quietly(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception:
        return None


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout} s for {what}")


# -- the bench ----------------------------------------------------------------------------

COLUMNS = (
    "scenario",
    "tasks",
    "in_flight",
    "done",
    "fault",
    "recorder",
    "missing",
    "dup",
    "running",
    "reaped",
    "db_errors",
    "lost",
    "dropped",
    "settled_s",
)
FAULT_ERRORS = {"WorkerLostError", "WorkerLost"}


class Bench:
    def __init__(self, tasks: int, task_seconds: float) -> None:
        from sqlalchemy import create_engine

        from persistence.database import create_database_engine
        from persistence.schema import upgrade_database
        from tests.pg_cluster import PrivateCluster, free_port

        self.tasks, self.task_seconds = tasks, task_seconds
        self.in_flight = 0
        self.tmp = Path(tempfile.mkdtemp(prefix="flowworker-faults-"))
        (self.tmp / "redis").mkdir()
        self.redis = PrivateRedis(self.tmp / "redis", free_port())
        self.redis.start()
        self.cluster = PrivateCluster()
        self.cluster.start()
        with create_engine(self.cluster.url, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.exec_driver_sql("CREATE DATABASE faults")
        self.database_url = self.cluster.url.rsplit("/", 1)[0] + "/faults"
        self.engine = create_database_engine(self.database_url, pool_size=2)
        upgrade_database(self.engine)
        self.spool_dir = self.tmp / "spool"
        self.env = {
            **os.environ,
            "FW_FAULTS_BROKER_URL": self.redis.url,
            "FLOWWORKER_DATABASE_URL": self.database_url,
            "FLOWWORKER_REDIS_URL": self.redis.url,
            "FLOWWORKER_SPOOL_DIR": str(self.spool_dir),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
        }
        os.environ.update(self.env)
        app.conf.broker_url = self.redis.url
        flowworker.install(app)  # the publisher records `queued`, with these settings

    def close(self) -> None:
        for worker in Worker.started:
            if worker.process.poll() is None:
                worker.kill()
        self.engine.dispose()
        self.redis.stop()
        self.cluster.destroy()

    # -- one scenario ---------------------------------------------------------------------

    def run(
        self, name: str, inject: Callable[[Bench, Worker, list[str]], Worker]
    ) -> dict[str, Any]:
        import shutil

        from flowworker.control import count_journaled

        queue = f"faults-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.env["FW_FAULTS_QUEUE"] = queue
        app.conf.task_default_queue = queue
        shutil.rmtree(self.spool_dir / "stats", ignore_errors=True)
        worker = Worker(
            self.env, self.tmp / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log", "faults"
        )
        self.in_flight = 0
        started = time.monotonic()
        ids = [
            # early-acknowledged tasks run longer, so a fault finds them mid-task
            work_acked_early.delay(n, self.task_seconds * 20).id
            if n % 10 == 9
            else work.delay(n, self.task_seconds).id
            for n in range(self.tasks)
        ]
        plugin = active_plugin()
        assert plugin is not None
        plugin.recorder.flush(60)
        worker = inject(self, worker, ids)
        settled_at = self.settle(ids, count_journaled)
        reaped = self.reap()
        row = {"scenario": name, "tasks": len(ids), "in_flight": self.in_flight}
        row.update(self.count(ids), reaped=reaped)
        row.update(self.worker_stats())
        row["settled_s"] = round(settled_at - started, 1)
        worker.stop()
        return row

    def finished(self, ids: list[str]) -> int:
        from sqlalchemy import func, select

        from persistence.models import TaskExecution

        te = TaskExecution.__table__
        terminal = ("completed", "failed", "cancelled")
        with self.engine.connect() as connection:
            query = select(func.count(func.distinct(te.c.celery_task_id))).where(
                te.c.celery_task_id.in_(ids), te.c.status.in_(terminal)
            )
            return int(connection.execute(query).scalar() or 0)

    def active(self) -> list[dict[str, Any]]:
        """The tasks the worker executes right now (each with its pool child's pid)."""
        # one worker: limit=1 returns as soon as it answers, not after the whole timeout
        replies = app.control.inspect(timeout=2.0, limit=1).active() or {}
        return [task for tasks in replies.values() for task in tasks or []]

    def wait_active(self, task_name: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """Wait until a `task_name` task executes; count what executes then (in_flight)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = _quietly(self.active) or []
            found = next((task for task in active if task["name"] == task_name), None)
            if found is not None:
                self.in_flight += len(active)
                return dict(found)
            time.sleep(0.05)
        return None

    def wait_progress(self, ids: list[str], fraction: float) -> None:
        target = fraction * len(ids)
        _wait(
            lambda: (_quietly(lambda: self.finished(ids)) or 0) >= target,
            300,
            f"{fraction:.0%} of the tasks to finish",
        )

    def settle(self, ids: list[str], count_journaled: Callable[[Path], int]) -> float:
        """Until every task is finished and no journal holds anything, or nothing moved for
        long enough that a redelivery would have happened; returns when it last moved."""
        quiet = VISIBILITY_TIMEOUT * 3
        last: tuple[int, int] | None = None
        moved = time.monotonic()
        deadline = moved + 600
        while time.monotonic() < deadline:
            state = (_quietly(lambda: self.finished(ids)) or 0, count_journaled(self.spool_dir))
            if state == (len(ids), 0):
                return time.monotonic()
            if state != last:
                last, moved = state, time.monotonic()
            elif time.monotonic() - moved > quiet:
                break
            time.sleep(1.0)
        return moved

    def reap(self) -> int:
        from flowworker.reaper import reap_stale_runs

        report = reap_stale_runs(self.engine, app, dt.timedelta(seconds=5), inspect_timeout=2)
        return len(report.reaped)

    def count(self, ids: list[str]) -> dict[str, int]:
        from sqlalchemy import select

        from persistence.models import TaskExecution

        te = TaskExecution.__table__
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(te.c.celery_task_id, te.c.attempt, te.c.status, te.c.error).where(
                    te.c.celery_task_id.in_(ids)
                )
            ).all()
        keys: dict[tuple[str, int], int] = {}
        finished: set[str] = set()
        counts = dict.fromkeys(("done", "fault", "recorder", "running"), 0)
        for row in rows:
            keys[(row.celery_task_id, row.attempt)] = (
                keys.get((row.celery_task_id, row.attempt), 0) + 1
            )
            if row.status in ("completed", "failed", "cancelled"):
                finished.add(row.celery_task_id)
            if row.status == "completed":
                counts["done"] += 1
            elif row.status == "failed":
                kind = (row.error or {}).get("type")
                counts["fault" if kind in FAULT_ERRORS else "recorder"] += 1
            elif row.status in ("queued", "running"):
                counts["running"] += 1
        counts["missing"] = len(set(ids) - finished)
        counts["dup"] = sum(n - 1 for n in keys.values())
        return counts

    def worker_stats(self) -> dict[str, int]:
        """Sum of the pool children's last `flowworker_stats` files (a killed child's are up
        to 5 s old)."""
        totals = {"db_errors": 0, "lost": 0, "dropped": 0}
        for path in (self.spool_dir / "stats").glob("*.json"):
            document = json.loads(path.read_text())
            totals["db_errors"] += document.get("errors") or 0
            totals["lost"] += document.get("lost") or 0
            totals["dropped"] += document.get("notifications_dropped") or 0
        return totals


# -- the faults ---------------------------------------------------------------------------


def no_fault(bench: Bench, worker: Worker, ids: list[str]) -> Worker:
    return worker


def kill_pool_child(bench: Bench, worker: Worker, ids: list[str]) -> Worker:
    # three times: first the child running an early-acknowledged task (Celery reports its
    # loss, WorkerLostError), then children running acks_late tasks (redelivered)
    for fraction, task_name in ((0.2, work_acked_early.name), (0.5, work.name), (0.8, work.name)):
        bench.wait_progress(ids, fraction)
        victim = bench.wait_active(task_name)
        os.kill(victim["worker_pid"] if victim else worker.child_pids()[0], signal.SIGKILL)
    return worker


def kill_whole_worker(bench: Bench, worker: Worker, ids: list[str]) -> Worker:
    bench.wait_progress(ids, 0.4)
    # kill it while a task acknowledged on receipt runs: that one nobody will redeliver,
    # and only the reaper can finish its record
    bench.wait_active(work_acked_early.name)
    worker.kill()
    return Worker(bench.env, worker.log, "replacement")


def restart_redis(bench: Bench, worker: Worker, ids: list[str]) -> Worker:
    bench.wait_progress(ids, 0.3)
    bench.in_flight += len(_quietly(bench.active) or [])
    bench.redis.stop()
    time.sleep(5)
    bench.redis.start()
    # the bench's own broker connections died with it: make new ones (kombu keeps its
    # pools in a registry keyed by URL; drop our references, close nothing)
    app._pool = None
    app.amqp._producer_pool = None
    return worker


def stop_postgres(bench: Bench, worker: Worker, ids: list[str]) -> Worker:
    bench.wait_progress(ids, 0.2)
    bench.in_flight += len(_quietly(bench.active) or [])
    bench.cluster.stop()
    time.sleep(20)
    bench.cluster.start()
    return worker


def freeze_postgres(bench: Bench, worker: Worker, ids: list[str]) -> Worker:
    bench.wait_progress(ids, 0.2)
    bench.in_flight += len(_quietly(bench.active) or [])
    bench.cluster.freeze()
    time.sleep(5)
    bench.cluster.thaw()
    return worker


SCENARIOS: dict[str, Callable[[Bench, Worker, list[str]], Worker]] = {
    "no fault": no_fault,
    "SIGKILL pool child x3": kill_pool_child,
    "SIGKILL worker, new one": kill_whole_worker,
    "restart Redis (5 s)": restart_redis,
    "stop PostgreSQL 20 s": stop_postgres,
    "SIGSTOP PostgreSQL 5 s": freeze_postgres,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--task-seconds", type=float, default=0.05)
    parser.add_argument("--only", nargs="*", help="run only scenarios whose name contains these")
    args = parser.parse_args()
    chosen = {
        name: inject
        for name, inject in SCENARIOS.items()
        if not args.only or any(part.lower() in name.lower() for part in args.only)
    }
    bench = Bench(args.tasks, args.task_seconds)
    rows = []
    try:
        for name, inject in chosen.items():
            rows.append(bench.run(name, inject))
            print(f"  {name}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        bench.close()
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in COLUMNS}
    print(
        f"flowworker faults: {args.tasks} tasks of {args.task_seconds} s per scenario, "
        "prefork concurrency 2, private Redis + PostgreSQL"
    )
    print("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS))
    print(f"(worker logs in {bench.tmp})")


if __name__ == "__main__":
    main()
