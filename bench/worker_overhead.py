"""End-to-end throughput of no-op tasks through a prefork worker (concurrency 2, Redis
broker): bare Celery vs Celery with flowworker vs Celery's SQLAlchemy result backend,
measured side by side in one run, rounds interleaved so machine noise hits every mode.

    .venv/bin/python bench/worker_overhead.py [--tasks 3000] [--rounds 3] [--publisher stays]

Prints tasks/s per mode (median of rounds) and the ratios to bare Celery, then the CPU
each task cost per process kind (publisher, worker main process, pool processes, the
PostgreSQL backends of the bench database, redis-server), from /proc: on a shared machine
throughput follows the other load, CPU per task much less.

BENCH_MODES picks the modes (default "bare flowworker sqlalchemy"). "flowworker:NAME=VALUE,..."
is flowworker with those settings (FLOWWORKER_NAME=VALUE), e.g. "flowworker:writer=thread"
(every process writes its own reports, as before the writer process) beside "flowworker";
"floor" is bare Celery beside `database_floor.py`.
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
from proc_cpu import BackendSampler, children_of, cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
MODES = tuple(os.environ.get("BENCH_MODES", "bare flowworker sqlalchemy").split())
FLOOR_SCRIPT = str(ROOT / "bench" / "database_floor.py")
CPU_PARTS = ("publisher", "worker main", "pool", "writer", "postgresql", "redis", "floor writer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--publisher",
        choices=("exits", "stays"),
        default="exits",
        help="the publishing process exits as soon as it has published (a batch job: with "
        "flowworker it writes, as it exits, the `queued` rows of the tasks still waiting), "
        "or stays until the tasks are done (an application)",
    )
    options = parser.parse_args()

    database = f"flowworker_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql://root@127.0.0.1:5432/{database}"
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        subprocess.run(
            [sys.executable, "-m", "flowworker", "db", "upgrade", "--database-url", database_url],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        for round_number in range(options.rounds):
            for mode in MODES:
                rate, cpu_ms = run_round(
                    mode, options.tasks, options.concurrency, database_url, options.publisher
                )
                rates[mode].append(rate)
                cpu[mode].append(cpu_ms)
                print(f"round {round_number + 1} {mode:<11} {rate:8.0f} tasks/s", flush=True)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    print(
        f"\n{options.tasks} no-op tasks, prefork concurrency {options.concurrency}, "
        f"Redis broker, the publisher {options.publisher} after publishing, "
        f"median of {options.rounds} interleaved rounds, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'mode':<12}{'tasks/s':>10}{'ratio to bare':>16}  ratio per round")
    for mode in MODES:
        median = statistics.median(rates[mode])
        if "bare" not in rates:
            print(f"{mode:<12}{median:>10.0f}")
            continue
        per_round = ", ".join(
            f"{rate / bare:.2f}" for rate, bare in zip(rates[mode], rates["bare"], strict=True)
        )
        print(
            f"{mode:<12}{median:>10.0f}{median / statistics.median(rates['bare']):>16.2f}"
            f"  {per_round}"
        )
    print("\nCPU ms per task (median of rounds)")
    print(f"{'mode':<12}" + "".join(f"{part:>13}" for part in CPU_PARTS) + f"{'total':>10}")
    for mode in MODES:
        parts = {part: statistics.median(r[part] for r in cpu[mode]) for part in CPU_PARTS}
        print(
            f"{mode:<12}"
            + "".join(f"{parts[part]:>13.2f}" for part in CPU_PARTS)
            + f"{sum(parts.values()):>10.2f}"
        )


def pool_and_writer(worker: int) -> tuple[list[int], list[int]]:
    """The worker's pool processes, and its writer process (`flowworker.journal_writer`)."""
    pool, writer = [], []
    for pid in children_of(worker):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        (writer if b"flowworker.journal_writer" in command else pool).append(pid)
    return pool, writer


def settings_of(mode: str) -> dict[str, str]:
    """The FLOWWORKER_* variables a "flowworker:name=value,..." mode sets."""
    _, _, spec = mode.partition(":")
    pairs = (item.partition("=") for item in spec.split(",") if item)
    return {f"FLOWWORKER_{name.strip().upper()}": value.strip() for name, _, value in pairs}


def wait_until_recorded(database_url: str, worker: str, tasks: int) -> float:
    """Seconds until `worker`'s `tasks` records are all in the database, completed: the
    recording must keep up, not only the tasks. CPU is read after that."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as connection:
        while True:
            row = connection.execute(
                "SELECT count(*) FROM task_executions WHERE worker = %s AND status = 'completed'",
                (worker,),
            ).fetchone()
            if row is not None and row[0] >= tasks:
                return time.monotonic() - started
            if time.monotonic() - started > 300:
                raise TimeoutError(f"only {row} of {tasks} records after 300 s")
            time.sleep(0.05)


def wait_for_cpu(process: subprocess.Popen[bytes]) -> float:
    """Wait for `process` to exit; the CPU seconds it used."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{process.args} exited with {process.returncode}")
    return usage.ru_utime + usage.ru_stime


def redis_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def run_round(
    mode: str, tasks: int, concurrency: int, database_url: str, publisher_life: str = "exits"
) -> tuple[float, dict[str, float]]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    counter = f"bench:done:{queue}"
    database = database_url.rpartition("/")[2]
    env = {
        **os.environ,
        "BENCH_MODE": mode.partition(":")[0],
        "BENCH_QUEUE": queue,
        "BENCH_COUNTER": counter,
        "BENCH_DATABASE_URL": database_url.replace("postgresql://", "postgresql+psycopg://"),
        "FLOWWORKER_SPOOL_DIR": f"/tmp/flowworker-bench-spool-{queue}",
        **settings_of(mode),
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
        pool, writer = pool_and_writer(worker.pid)
        with BackendSampler(ADMIN, database) as sampler:
            before = {
                "worker main": cpu_seconds([worker.pid]),
                "pool": cpu_seconds(pool),
                "writer": cpu_seconds(writer),
                "redis": cpu_seconds([redis_pid(client)]),
            }
            floor = None
            if mode == "floor":  # bare Celery, and the database work of recording alone
                floor = subprocess.Popen(
                    [sys.executable, FLOOR_SCRIPT, database_url, REDIS_URL, counter, str(tasks)],
                    cwd=ROOT,
                    env=env,
                )
            publisher = subprocess.Popen(
                [sys.executable, "-c", PUBLISH, str(tasks), publisher_life],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert publisher.stdout is not None
            started = float(publisher.stdout.readline() or "nan")
            deadline = time.monotonic() + 600
            while int(client.get(counter) or 0) < tasks:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{mode}: only {client.get(counter)} of {tasks} tasks done")
                time.sleep(0.01)
            finished = time.time()
            publisher_cpu = float(publisher.stdout.readline() or "nan")
            if publisher.wait() != 0:
                raise RuntimeError(f"{mode}: the publisher exited with {publisher.returncode}")
            floor_cpu = 0.0
            if floor is not None:
                floor_cpu = wait_for_cpu(floor)
            if mode.startswith("flowworker"):
                lag = wait_until_recorded(database_url, f"{queue}@127.0.0.1", tasks)
                print(f"    every record written {lag:.2f} s after the last task", flush=True)
            else:
                time.sleep(0.5)
            after = {
                "worker main": cpu_seconds([worker.pid]),
                "pool": cpu_seconds(pool_and_writer(worker.pid)[0]),
                "writer": cpu_seconds(pool_and_writer(worker.pid)[1]),
                "redis": cpu_seconds([redis_pid(client)]),
            }
        cpu_ms = {part: 1000 * (after[part] - before[part]) / tasks for part in before}
        # every backend of the database, the publisher's (gone by now) included
        cpu_ms["postgresql"] = 1000 * sampler.cpu_seconds() / tasks
        cpu_ms["publisher"] = 1000 * publisher_cpu / tasks
        cpu_ms["floor writer"] = 1000 * floor_cpu / tasks
    finally:
        worker.terminate()
        worker.wait(60)
        client.delete(counter)
    return tasks / (finished - started), cpu_ms


# The publisher runs in its own process, as an application would, with the same app
# (so with flowworker installed in flowworker mode).
PUBLISH = """
import sys, time
from overhead_app import COUNTER, _redis, noop, app
count, life = int(sys.argv[1]), sys.argv[2]
started = time.time()
cpu_before = time.process_time()
for n in range(count):
    noop.delay(n)
print(started, flush=True)
if life == "stays":  # an application: it goes on after publishing
    while int(_redis.get(COUNTER) or 0) < count:
        time.sleep(0.05)
    time.sleep(1.0)
try:
    import flowworker
    flowworker.uninstall()  # flush what the publisher still holds
except Exception:
    pass
print(time.process_time() - cpu_before, flush=True)
"""

if __name__ == "__main__":
    main()
