"""The query layer against hand-written SQL, on 1,000,000 task executions in PostgreSQL.

    .venv/bin/python bench/query.py [--rows 1000000] [--iterations 400] [--explain]
                                    [--keep | --reuse DATABASE] [--tuned-baseline]

Creates a fresh database (dropped at the end unless --keep), loads 10 organizations (one
holds half the data, as real tenants are uneven), 20,000 flow executions and the task
executions with retries (several task_execution_idx per task name, earlier attempts
failed), mixed statuses, created_at spread over 7 days. The load uses COPY with the
status-history trigger disabled (`ALTER TABLE task_executions DISABLE TRIGGER USER`, as the
owner): the history is not what is measured, and the trigger would double the load. Foreign
keys stay checked. Then ANALYZE.

Each case runs our function and the hand-written SQL alternately on the same connection and
transaction (same psycopg auto-prepare, same indexes, same parameters), and prints p50/p99
of both, the median CPU time of this process per call, and the ratios. The hand-written
side fetches plain tuples with psycopg's defaults (text format, `json.loads` per jsonb
value); ours builds the typed records. `--tuned-baseline` gives the hand-written side what
the query layer's cursor has (binary format, `persistence.jsonload`), to see what the layer
itself costs on top.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persistence.database import create_database_engine, transaction
from persistence.filters import TaskExecutionFilter
from persistence.jsonload import register_jsonb_loader
from persistence.queries import (
    fetch_flow_execution,
    fetch_task_attempts,
    fetch_task_execution,
    fetch_task_executions,
)
from persistence.schema import upgrade_database
from persistence.status import ExecutionStatus as S

ADMIN_URL = os.environ.get(
    "FLOWWORKER_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
ORGANIZATIONS = 10
FLOW_EXECUTIONS = 20_000
PAGE = 50
COLUMNS = (
    "id, organization_id, flow_execution_id, task_name, task_execution_idx, status, input, "
    "output, error, modified_by, created_at, updated_at, celery_task_id, attempt, worker, "
    "queued_at, started_at, finished_at, version"
)
ATTEMPTS = ((1, 80), (2, 12), (3, 5), (4, 3))
LAST_STATUS = (
    (S.COMPLETED, 85),
    (S.FAILED, 7),
    (S.CANCELLED, 3),
    (S.RUNNING, 2),
    (S.QUEUED, 1),
    (S.DELETED, 1),
    (S.STALE, 1),
)
ERROR = json.dumps({"message": "upstream timed out", "type": "TimeoutError", "traceback": "..."})


def weighted(rng: random.Random, table: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([value for value, _ in table], [weight for _, weight in table])[0]


def copy_text(value: Any) -> str:
    if value is None:
        return r"\N"
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def task_rows(
    rng: random.Random,
    flow_execution_id: uuid.UUID,
    organization_id: uuid.UUID,
    started: dt.datetime,
    per_flow: int,
) -> Iterator[tuple[Any, ...]]:
    """`per_flow` task executions of one flow execution: task names with 1-4 attempts."""
    produced = 0
    task_number = 0
    moment = started
    while produced < per_flow:
        task_name = f"task_{task_number:02}"
        task_number += 1
        attempts = min(weighted(rng, ATTEMPTS), per_flow - produced)
        for idx in range(attempts):
            last = idx == attempts - 1
            status = weighted(rng, LAST_STATUS) if last else S.FAILED
            moment += dt.timedelta(seconds=rng.uniform(0.5, 20))
            finished = moment + dt.timedelta(seconds=rng.uniform(0.1, 5))
            done = status not in (S.QUEUED, S.RUNNING)
            yield (
                uuid.uuid4(),
                organization_id,
                flow_execution_id,
                task_name,
                idx,
                status.value,
                json.dumps({"n": idx}),
                '{"ok": true}' if status is S.COMPLETED else None,
                ERROR if status is S.FAILED else None,
                "system",
                moment,
                finished if done else moment,
                f"{flow_execution_id.hex[:12]}-{task_name}-{idx}",
                idx,
                "worker-1",
                moment,
                None if status is S.QUEUED else moment,
                finished if done else None,
                3,
            )
            produced += 1


def load(dsn: str, rows: int, days: float, rng: random.Random) -> None:
    now = dt.datetime.now(dt.UTC)
    per_flow = rows // FLOW_EXECUTIONS
    organizations = [uuid.uuid4() for _ in range(ORGANIZATIONS)]
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO organizations (id, name) VALUES (%s, %s)",
            [(org, f"org-{n}") for n, org in enumerate(organizations)],
        )
        flows = []
        for n in range(FLOW_EXECUTIONS):
            # half the flow executions belong to org-0, the rest spread over the others
            organization = organizations[0] if n % 2 == 0 else rng.choice(organizations[1:])
            created = now - dt.timedelta(seconds=rng.uniform(0, days * 86400))
            flows.append((uuid.uuid4(), organization, created))
        with cursor.copy(
            "COPY flow_executions (id, organization_id, status, created_at, updated_at) FROM STDIN"
        ) as copy:
            for flow_id, organization, created in flows:
                copy.write_row((flow_id, organization, "completed", created, created))
        cursor.execute("ALTER TABLE task_executions DISABLE TRIGGER USER")
        started = time.perf_counter()
        with cursor.copy(f"COPY task_executions ({COLUMNS}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for number, (flow_id, organization, created) in enumerate(flows):
                for row in task_rows(rng, flow_id, organization, created, per_flow):
                    buffer.write("\t".join(map(copy_text, row)) + "\n")
                if number % 2000 == 1999:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
                    print(f"\r  loaded {(number + 1) * per_flow:,} rows", end="", flush=True)
            copy.write(buffer.getvalue())
        cursor.execute("ALTER TABLE task_executions ENABLE TRIGGER USER")
        connection.commit()
        elapsed = time.perf_counter() - started
        print(f"\n  loaded {FLOW_EXECUTIONS * per_flow:,} rows in {elapsed:.0f} s")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


# -- measuring ---------------------------------------------------------------------------

RAW_LIST = f"SELECT {COLUMNS} FROM task_executions WHERE organization_id = %s AND "
RAW_SQL = {
    "flow_tasks": RAW_LIST + "flow_execution_id = %s AND status <> 'deleted' "
    "ORDER BY created_at DESC, id DESC LIMIT 101",
    "failed_first": RAW_LIST + "status = 'failed' AND created_at >= %s "
    "ORDER BY created_at DESC, id DESC LIMIT 51",
    "failed_after": RAW_LIST + "status = 'failed' AND created_at >= %s "
    "AND (created_at, id) < (%s, %s) ORDER BY created_at DESC, id DESC LIMIT 51",
    "by_id": RAW_LIST + "id = %s",
    "flow": "SELECT id, organization_id, flow_id, status, inputs, celery_root_id, created_at, "
    "updated_at, finished_at FROM flow_executions WHERE organization_id = %s AND id = %s",
    "flow_all_tasks": RAW_LIST + "flow_execution_id = %s AND status <> 'deleted' "
    "ORDER BY created_at, task_name, task_execution_idx",
    "attempts": RAW_LIST + "flow_execution_id = %s AND task_name = %s AND status <> 'deleted' "
    "ORDER BY task_execution_idx",
}


def percentiles(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1e6, p99 / 1e6


Timings = tuple[list[int], list[int]]  # wall ns, CPU ns of this process, per call


def side_by_side(
    ours: Callable[[int], Any], raw: Callable[[int], Any], iterations: int
) -> tuple[Timings, Timings]:
    for warmup in range(20):  # past psycopg's auto-prepare threshold (5) on both sides
        ours(warmup)
        raw(warmup)
    ours_ns: Timings = ([], [])
    raw_ns: Timings = ([], [])
    sides = ((ours, ours_ns), (raw, raw_ns))
    for iteration in range(iterations):
        for function, (wall, cpu) in sides[:: 1 if iteration % 2 else -1]:
            cpu_start = time.process_time_ns()
            start = time.perf_counter_ns()
            function(iteration)
            wall.append(time.perf_counter_ns() - start)
            cpu.append(time.process_time_ns() - cpu_start)
    return ours_ns, raw_ns


def sample(cursor: Any, sql: str, *args: Any) -> list[Any]:
    cursor.execute(sql, args)
    return cursor.fetchall()


def explain(raw: Any, call: Callable[[int], Any]) -> str:
    """The plan of every statement `call(0)` runs, as executed (auto_explain, as notices)."""
    plans: list[str] = []

    def keep(diagnostic: Any) -> None:
        plans.append(diagnostic.message_primary or "")

    raw.add_notice_handler(keep)
    raw.execute("LOAD 'auto_explain'")
    for setting in (
        "log_analyze = on",
        "log_buffers = on",
        "log_timing = off",
        "log_level = notice",
        "log_min_duration = 0",
    ):
        raw.execute(f"SET auto_explain.{setting}")
    try:
        call(0)
    finally:
        raw.execute("SET auto_explain.log_min_duration = -1")
        raw.remove_notice_handler(keep)
    return "\n".join("      " + line for plan in plans for line in plan.splitlines())


def run_cases(
    connection: Connection, iterations: int, show_plans: bool, tuned_baseline: bool
) -> list[tuple[str, Any]]:
    raw = connection.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor(binary=tuned_baseline)
    if tuned_baseline:  # what the query layer's own cursor does (persistence.compiled)
        register_jsonb_loader(cursor)
    big_org = sample(
        cursor,
        "SELECT organization_id FROM flow_executions GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )[0][0]
    flows = [
        r[0]
        for r in sample(
            cursor,
            "SELECT id FROM flow_executions WHERE organization_id = %s ORDER BY random() LIMIT 500",
            big_org,
        )
    ]
    tasks = sample(
        cursor, "SELECT id, organization_id FROM task_executions TABLESAMPLE SYSTEM (1) LIMIT 500"
    )
    retried = sample(
        cursor,
        "SELECT organization_id, flow_execution_id, task_name FROM "
        "task_executions TABLESAMPLE SYSTEM (1) WHERE task_execution_idx = 2 LIMIT 500",
    )
    day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    failed = TaskExecutionFilter(statuses=frozenset({S.FAILED}), created_after=day_ago)

    cursor_200: str | None = None
    for _ in range(199):
        cursor_200 = fetch_task_executions(
            connection, big_org, failed, PAGE, cursor_200
        ).next_cursor
    assert cursor_200 is not None, "fewer than 200 pages of failed executions in the last day"
    # the hand-written side continues after the last row of page 199, found by OFFSET once
    offset_sql = RAW_SQL["failed_first"].replace("LIMIT 51", f"OFFSET {199 * PAGE - 1} LIMIT 1")
    last_of_199 = sample(cursor, offset_sql, big_org, day_ago)[0]
    key_200 = (last_of_199[10], last_of_199[0])
    page_200 = fetch_task_executions(connection, big_org, failed, PAGE, cursor_200)
    assert [i.id for i in page_200.items] == [
        r[0] for r in sample(cursor, RAW_SQL["failed_after"], big_org, day_ago, *key_200)[:PAGE]
    ]

    cases: dict[str, tuple[Callable[[int], Any], Callable[[int], Any]]] = {
        "one flow execution's tasks": (
            lambda n: fetch_task_executions(
                connection,
                big_org,
                TaskExecutionFilter(flow_execution_id=flows[n % len(flows)]),
                100,
            ),
            lambda n: sample(cursor, RAW_SQL["flow_tasks"], big_org, flows[n % len(flows)]),
        ),
        "failed, last day, page 1": (
            lambda n: fetch_task_executions(connection, big_org, failed, PAGE),
            lambda n: sample(cursor, RAW_SQL["failed_first"], big_org, day_ago),
        ),
        "failed, last day, page 200": (
            lambda n: fetch_task_executions(connection, big_org, failed, PAGE, cursor_200),
            lambda n: sample(cursor, RAW_SQL["failed_after"], big_org, day_ago, *key_200),
        ),
        "get by id": (
            lambda n: fetch_task_execution(
                connection, tasks[n % len(tasks)][1], tasks[n % len(tasks)][0]
            ),
            lambda n: sample(
                cursor, RAW_SQL["by_id"], tasks[n % len(tasks)][1], tasks[n % len(tasks)][0]
            ),
        ),
        "flow execution + summary": (
            lambda n: fetch_flow_execution(connection, big_org, flows[n % len(flows)]),
            lambda n: (
                sample(cursor, RAW_SQL["flow"], big_org, flows[n % len(flows)]),
                sample(cursor, RAW_SQL["flow_all_tasks"], big_org, flows[n % len(flows)]),
            ),
        ),
        "attempts of one task": (
            lambda n: fetch_task_attempts(connection, *retried[n % len(retried)]),
            lambda n: sample(cursor, RAW_SQL["attempts"], *retried[n % len(retried)]),
        ),
    }
    results = []
    for name, (ours, hand_written) in cases.items():
        (ours_wall, ours_cpu), (raw_wall, raw_cpu) = side_by_side(ours, hand_written, iterations)
        results.append(
            (
                name,
                (*percentiles(ours_wall), statistics.median(ours_cpu) / 1e6),
                (*percentiles(raw_wall), statistics.median(raw_cpu) / 1e6),
            )
        )
        if show_plans:
            print(f"  {name}:\n{explain(raw, ours)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7, help="spread of created_at")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--explain", action="store_true", help="print our SQL and its plan")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", metavar="DATABASE", help="measure a kept database again")
    parser.add_argument(
        "--tuned-baseline",
        action="store_true",
        help="the hand-written side fetches in binary format and parses jsonb with "
        "persistence.jsonload, as the query layer does",
    )
    options = parser.parse_args()
    admin = make_url(ADMIN_URL)
    name = options.reuse or f"query_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin_dsn = admin.render_as_string(hide_password=False)
    dsn = admin.set(database=name).render_as_string(hide_password=False)
    if not options.reuse:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    engine = create_database_engine(dsn)
    try:
        if not options.reuse:
            upgrade_database(engine)
            print(f"database {name}: loading {options.rows:,} task executions")
            load(dsn, options.rows, options.days, random.Random(5))
        with transaction(engine) as connection:
            results = run_cases(
                connection, options.iterations, options.explain, options.tuned_baseline
            )
    finally:
        engine.dispose()
        if options.keep or options.reuse:
            print(f"kept database {name}")
        else:
            with psycopg.connect(admin_dsn, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"\n{options.iterations} runs each, in ms (cpu: median CPU time of this process):")
    print(
        f"  {'case':28} {'ours p50':>8} {'p99':>6} {'cpu':>6}  "
        f"{'hand-written p50':>16} {'p99':>6} {'cpu':>6}  ratio p50  ratio cpu"
    )
    for case, (ours_p50, ours_p99, ours_cpu), (raw_p50, raw_p99, raw_cpu) in results:
        print(
            f"  {case:28} {ours_p50:8.3f} {ours_p99:6.3f} {ours_cpu:6.3f}  "
            f"{raw_p50:16.3f} {raw_p99:6.3f} {raw_cpu:6.3f}  "
            f"{ours_p50 / raw_p50:9.2f}  {ours_cpu / raw_cpu:9.2f}"
        )
    ours_p50s = {case: ours[0] for case, ours, _ in results}
    print(
        f"  page 200 / page 1 (ours, p50): "
        f"{ours_p50s['failed, last day, page 200'] / ours_p50s['failed, last day, page 1']:.2f}"
    )


if __name__ == "__main__":
    main()
