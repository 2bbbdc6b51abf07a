"""What the flow engine costs over the same work as a plain Celery canvas, side by side.

One prefork worker (concurrency 2, Redis broker, PostgreSQL, flowworker recording in both
modes) runs, in interleaved rounds:

* linear: a flow of N steps, each `tasks.echo` of the previous output, beside
  `chain(echo.s(0), echo.s(), ...)` of N links;
* fan-out: a flow task looping over M items, beside `group(echo.s(i) for i in range(M))`.

Each is timed from the first publish until every execution is recorded completed (the flow
execution `completed`, the canvas's M or N records `completed`).

    .venv/bin/python bench/flows.py [--steps 20] [--items 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

# bench/http.py would shadow the standard library's `http` (urllib imports it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    database = f"flowworker_bench_flows_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    database_url = f"postgresql://root@127.0.0.1:5432/{database}"
    queue = f"fw-bench-flows-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.environ.update(
        FW_TEST_BROKER_URL=REDIS_URL,
        FW_TEST_QUEUE=queue,
        FLOWWORKER_DATABASE_URL=database_url,
        PYTHONPATH=str(ROOT),
    )
    sys.path.insert(0, str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "flowworker", "db", "upgrade"], check=True, capture_output=True
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.flowworker.flows.flow_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"bench-{queue}@127.0.0.1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(6)  # worker start
        results = measure(options, database_url)
    finally:
        worker.terminate()
        worker.wait(30)
        with psycopg.connect(ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(f"\nprefork concurrency 2, Redis broker, PostgreSQL; median of {options.rounds} rounds")
    print(f"{'shape':<28}{'canvas s':>10}{'flow s':>10}{'flow / canvas':>16}")
    for shape, (canvas, flow) in results.items():
        print(f"{shape:<28}{canvas:>10.2f}{flow:>10.2f}{flow / canvas:>16.2f}")


def measure(options: argparse.Namespace, database_url: str) -> dict[str, tuple[float, float]]:
    from celery import chain, group

    import flowworker
    from flowworker.flows import FlowRunner, parse_flow
    from flowworker.flows.worker import register
    from persistence.database import create_database_engine
    from tests.flowworker.flows.flow_app import app

    app.loader.import_default_modules()
    flowworker.install(app)
    register(app)
    engine = create_database_engine(database_url)
    runner = FlowRunner(app, engine=engine)
    echo = app.tasks["tasks.echo"]
    steps = "\n".join(
        f"  - {{name: s{n}, task: tasks.echo, input: {{value: "
        + ("0" if n == 0 else f'"{{{{s{n - 1}.output}}}}"')
        + "}}"
        for n in range(options.steps)
    )
    linear = parse_flow(f"name: linear\nversion: '1'\ntasks:\n{steps}\n")
    fan = parse_flow(
        "name: fan\nversion: '1'\ntasks:\n"
        f"  - {{name: each, task: tasks.echo, loop: {list(range(options.items))}, "
        "input: {value: '{{item}}'}}\n"
    )
    timings: dict[str, list[float]] = {
        "canvas linear": [],
        "flow linear": [],
        "canvas fan": [],
        "flow fan": [],
    }
    for round_number in range(options.rounds):
        started = time.perf_counter()
        result = chain(echo.s(0), *(echo.s() for _ in range(options.steps - 1))).apply_async()
        root = result
        while root.parent is not None:
            root = root.parent
        wait_records(engine, uuid.UUID(root.id), options.steps)
        timings["canvas linear"].append(time.perf_counter() - started)

        started = time.perf_counter()
        wait_flow(engine, runner.run(linear))
        timings["flow linear"].append(time.perf_counter() - started)

        started = time.perf_counter()
        result = group(echo.s(n) for n in range(options.items)).apply_async()
        wait_records(engine, uuid.UUID(result.id), options.items)
        timings["canvas fan"].append(time.perf_counter() - started)

        started = time.perf_counter()
        wait_flow(engine, runner.run(fan))
        timings["flow fan"].append(time.perf_counter() - started)
        print(
            f"round {round_number + 1}: "
            + ", ".join(f"{name} {values[-1]:.2f}s" for name, values in timings.items()),
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in timings.items()}
    return {
        f"linear, {options.steps} steps": (median["canvas linear"], median["flow linear"]),
        f"fan-out, {options.items} items": (median["canvas fan"], median["flow fan"]),
    }


def wait_records(engine, flow_execution_id: uuid.UUID, count: int) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            done = connection.execute(
                text(
                    "SELECT count(*) FROM task_executions WHERE flow_execution_id = :id"
                    " AND status = 'completed'"
                ),
                {"id": flow_execution_id},
            ).scalar_one()
        if done >= count:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{flow_execution_id}: {done} of {count} completed")


def wait_flow(engine, flow_execution_id: uuid.UUID) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            status = connection.execute(
                text("SELECT status FROM flow_executions WHERE id = :id"), {"id": flow_execution_id}
            ).scalar_one()
        if status in ("completed", "failed", "cancelled"):
            assert status == "completed", status
            return
        time.sleep(0.02)
    raise TimeoutError(str(flow_execution_id))


if __name__ == "__main__":
    main()
