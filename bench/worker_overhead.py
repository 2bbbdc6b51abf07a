"""End-to-end throughput of no-op tasks through a prefork worker (concurrency 2, Redis
broker): bare Celery vs Celery with flowworker vs Celery's SQLAlchemy result backend,
measured side by side in one run, rounds interleaved so machine noise hits every mode.

    .venv/bin/python bench/worker_overhead.py [--tasks 3000] [--rounds 3]

Prints tasks/s per mode (median of rounds) and the ratios to bare Celery.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
MODES = ("bare", "flowworker", "sqlalchemy")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()

    database = f"flowworker_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql://root@127.0.0.1:5432/{database}"
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        subprocess.run(
            [sys.executable, "-m", "flowworker", "db", "upgrade", "--database-url", database_url],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        for round_number in range(options.rounds):
            for mode in MODES:
                rate = run_round(mode, options.tasks, options.concurrency, database_url)
                rates[mode].append(rate)
                print(f"round {round_number + 1} {mode:<11} {rate:8.0f} tasks/s", flush=True)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    bare = statistics.median(rates["bare"])
    print(
        f"\n{options.tasks} no-op tasks, prefork concurrency {options.concurrency}, "
        f"Redis broker, median of {options.rounds} interleaved rounds"
    )
    print(f"{'mode':<12}{'tasks/s':>10}{'ratio to bare':>16}")
    for mode in MODES:
        median = statistics.median(rates[mode])
        print(f"{mode:<12}{median:>10.0f}{median / bare:>16.2f}")


def run_round(mode: str, tasks: int, concurrency: int, database_url: str) -> float:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    counter = f"bench:done:{queue}"
    env = {
        **os.environ,
        "BENCH_MODE": mode,
        "BENCH_QUEUE": queue,
        "BENCH_COUNTER": counter,
        "BENCH_DATABASE_URL": database_url.replace("postgresql://", "postgresql+psycopg://"),
        "FLOWWORKER_SPOOL_DIR": f"/tmp/flowworker-bench-spool-{queue}",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
    }
    log = Path(tempfile.gettempdir()) / f"{queue}.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "overhead_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-Q",
            queue,
            "-n",
            f"{queue}@127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis.from_url(REDIS_URL)
    try:
        time.sleep(3)  # let the worker come up before the clock starts
        publisher = subprocess.run(
            [sys.executable, "-c", PUBLISH, str(tasks)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        started = float(publisher.stdout.split()[0])
        deadline = time.monotonic() + 600
        while int(client.get(counter) or 0) < tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mode}: only {client.get(counter)} of {tasks} tasks done")
            time.sleep(0.01)
        finished = time.time()
    finally:
        worker.terminate()
        worker.wait(60)
        client.delete(counter)
    return tasks / (finished - started)


# The publisher runs in its own process, as an application would, with the same app
# (so with flowworker installed in flowworker mode).
PUBLISH = """
import sys, time
from overhead_app import noop, app
count = int(sys.argv[1])
started = time.time()
for n in range(count):
    noop.delay(n)
print(started)
try:
    import flowworker
    flowworker.uninstall()  # flush what the publisher still holds
except Exception:
    pass
"""

if __name__ == "__main__":
    main()
