"""The store's upsert against a hand-written psycopg 3 upsert, side by side, on PostgreSQL.

    .venv/bin/python bench/upsert.py [--rounds 8] [--single 300] [--batch 500]

Creates its own database (next to the server's `postgres` database; admin URL from
$FLOWWORKER_BENCH_POSTGRES_URL, else $FLOWWORKER_TEST_POSTGRES_URL, else
postgresql://root@127.0.0.1:5432/postgres), migrates it, measures, and drops it.

Two comparisons, each in interleaved rounds (store, hand-written, hand-written, store, ...)
so that whatever else the machine does hits both sides alike:

* single: one report per call. The store: `upsert_task_execution(connection, report,
  organization_id=...)` on `persistence.database.autocommit(engine)`, a pooled connection
  checked out per report (what the HTTP API does: the organization setting of row-level
  security, the upsert and the outcome in one statement, `persistence.upsert_function`).
  Hand-written: `INSERT ... ON CONFLICT DO UPDATE ... WHERE <legal move>` with autocommit,
  one statement per report, on one connection held throughout.
* batch: `upsert_task_executions` with --batch reports per call and transaction, vs
  psycopg's `executemany` of the same hand-written statement in one transaction.

Each round also measures CPU per report: this process ("client") plus every PostgreSQL
backend of the bench database (/proc; Linux, local server), printed in total and apart.
On a shared machine the rates follow the other load; the CPU ratio (hand-written CPU /
store CPU) much less.

Both sides write the same reports (queued, running, completed for each key, on fresh keys
every round) into the same table, with its history trigger; the hand-written statement gets
the organization id from its caller instead of from the flow execution row and reports no
outcome, so it is the cheapest a correct guarded upsert can be from Python.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from proc_cpu import backend_pids, cpu_seconds
from sqlalchemy import make_url

from persistence.database import autocommit, create_database_engine, transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.reports import TaskReport
from persistence.schema import upgrade_database
from persistence.status import ExecutionStatus, allowed_transition_pairs
from persistence.upsert import upsert_task_execution, upsert_task_executions

ADMIN_URL = os.environ.get(
    "FLOWWORKER_BENCH_POSTGRES_URL",
    os.environ.get("FLOWWORKER_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres"),
)
LIFECYCLE = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.COMPLETED)

LEGAL_MOVES = ", ".join(f"'{pair}'" for pair in allowed_transition_pairs())
HAND_WRITTEN = f"""
INSERT INTO task_executions AS te (
    id, organization_id, flow_execution_id, task_name, task_execution_idx, status,
    input, output, modified_by, attempt, queued_at, started_at, finished_at,
    created_at, updated_at, version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'system', 0, %s, %s, %s, now(), now(), 1)
ON CONFLICT (flow_execution_id, task_name, task_execution_idx) DO UPDATE SET
    status = excluded.status,
    input = coalesce(excluded.input, te.input),
    output = coalesce(excluded.output, te.output),
    queued_at = coalesce(te.queued_at, excluded.queued_at),
    started_at = coalesce(te.started_at, excluded.started_at),
    finished_at = coalesce(excluded.finished_at, te.finished_at),
    updated_at = excluded.updated_at,
    version = te.version + 1
WHERE te.status || '>' || excluded.status IN ({LEGAL_MOVES})
"""


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Workload:
    """Fresh keys on demand: every round writes records nobody wrote before."""

    def __init__(self, flow_execution_id: uuid.UUID) -> None:
        self.flow_execution_id = flow_execution_id
        self.next_key = 0

    def keys(self, count: int) -> list[tuple[str, int]]:
        first, self.next_key = self.next_key, self.next_key + count
        return [(f"task-{n % 50}", n // 50) for n in range(first, first + count)]

    def reports(self, keys: list[tuple[str, int]], status: ExecutionStatus) -> list[TaskReport]:
        output = {"rows": 42} if status is ExecutionStatus.COMPLETED else None
        return [
            TaskReport(
                self.flow_execution_id,
                name,
                idx,
                status,
                input={"n": idx} if status is ExecutionStatus.QUEUED else None,
                output=output,
            )
            for name, idx in keys
        ]


def hand_written_row(report: TaskReport, organization_id: uuid.UUID) -> tuple[object, ...]:
    status = report.status
    return (
        uuid.uuid4(),
        organization_id,
        report.flow_execution_id,
        report.task_name,
        report.task_execution_idx,
        status.value,
        psycopg.types.json.Jsonb(report.input) if report.input is not None else None,
        psycopg.types.json.Jsonb(report.output) if report.output is not None else None,
        report.at if status is ExecutionStatus.QUEUED else None,
        report.at if status is ExecutionStatus.RUNNING else None,
        report.at if status.is_terminal else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--single", type=int, default=300, help="reports per single round")
    parser.add_argument("--batch", type=int, default=500, help="reports per batch call")
    parser.add_argument(
        "--batches", type=int, default=6, help="batch calls per batch round (x --batch reports)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also: single upserts each in its own transaction (with and without the "
        "organization setting), and the hand-written statement in that transaction shape "
        "(BEGIN, set_config, INSERT, COMMIT)",
    )
    args = parser.parse_args()

    name = f"flowworker_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = plain_dsn(ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        run(url, args)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(url: str, args: argparse.Namespace) -> None:
    engine = create_database_engine(url, pool_size=1)
    upgrade_database(engine)
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "bench")
        store_fe = create_flow_execution(connection, organization_id)
        hand_fe = create_flow_execution(connection, organization_id)
    store_work, hand_work = Workload(store_fe), Workload(hand_fe)
    raw = psycopg.connect(plain_dsn(url), autocommit=True)
    raw.execute("SELECT 1")

    def store_single() -> int:
        keys = store_work.keys(args.single // len(LIFECYCLE))
        count = 0
        for status in LIFECYCLE:
            for report in store_work.reports(keys, status):
                with autocommit(engine) as connection:
                    upsert_task_execution(connection, report, organization_id=organization_id)
                count += 1
        return count

    def store_single_transaction(scope: uuid.UUID | None = organization_id) -> int:
        keys = store_work.keys(args.single // len(LIFECYCLE))
        count = 0
        for status in LIFECYCLE:
            for report in store_work.reports(keys, status):
                with transaction(engine, scope) as connection:
                    upsert_task_execution(connection, report)
                count += 1
        return count

    def store_single_unscoped() -> int:
        return store_single_transaction(None)

    # The same connection for every report, as the hand-written side
    held = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def store_single_held() -> int:
        keys = store_work.keys(args.single // len(LIFECYCLE))
        count = 0
        for status in LIFECYCLE:
            for report in store_work.reports(keys, status):
                upsert_task_execution(held, report, organization_id=organization_id)
                count += 1
        return count

    def hand_single() -> int:
        keys = hand_work.keys(args.single // len(LIFECYCLE))
        count = 0
        with raw.cursor() as cursor:
            for status in LIFECYCLE:
                for report in hand_work.reports(keys, status):
                    cursor.execute(HAND_WRITTEN, hand_written_row(report, organization_id))
                    count += 1
        return count

    in_transaction = psycopg.connect(plain_dsn(url))

    def hand_single_in_transaction() -> int:
        keys = hand_work.keys(args.single // len(LIFECYCLE))
        count = 0
        for status in LIFECYCLE:
            for report in hand_work.reports(keys, status):
                in_transaction.execute(
                    "SELECT set_config('flowworker.organization_id', %s, true)",
                    (str(organization_id),),
                )
                in_transaction.execute(HAND_WRITTEN, hand_written_row(report, organization_id))
                in_transaction.commit()
                count += 1
        return count

    def batches(work: Workload) -> list[list[TaskReport]]:
        per_status = max(1, args.batches // len(LIFECYCLE))
        key_sets = [work.keys(args.batch) for _ in range(per_status)]
        return [work.reports(keys, status) for status in LIFECYCLE for keys in key_sets]

    def store_batch() -> int:
        count = 0
        for batch in batches(store_work):
            with transaction(engine, organization_id) as connection:
                upsert_task_executions(connection, batch)
            count += len(batch)
        return count

    def hand_batch() -> int:
        count = 0
        for batch in batches(hand_work):
            with raw.transaction(), raw.cursor() as cursor:
                cursor.executemany(
                    HAND_WRITTEN, [hand_written_row(r, organization_id) for r in batch]
                )
            count += len(batch)
        return count

    # warm up both sides (connections, statement caches, server buffers)
    for function in (
        store_single,
        store_single_held,
        store_single_transaction,
        hand_single,
        hand_single_in_transaction,
        store_batch,
        hand_batch,
    ):
        function()

    probe = psycopg.connect(plain_dsn(url), autocommit=True)
    results = {
        "single": compare(store_single, hand_single, args.rounds, probe),
        "single, one connection held": compare(store_single_held, hand_single, args.rounds, probe),
        "batch": compare(store_batch, hand_batch, args.rounds, probe),
    }
    if args.breakdown:
        results["single, own transaction each"] = compare(
            store_single_transaction, hand_single, args.rounds, probe
        )
        results["single, own transaction, no organization"] = compare(
            store_single_unscoped, hand_single, args.rounds, probe
        )
        results["single in a transaction vs hand-written in one"] = compare(
            store_single_transaction, hand_single_in_transaction, args.rounds, probe
        )
    probe.close()
    raw.close()
    held.close()
    in_transaction.close()
    engine.dispose()

    with psycopg.connect(plain_dsn(url)) as connection:
        server = connection.execute("SHOW server_version").fetchone()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, PostgreSQL {server[0] if server else '?'}"
    )
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, rounds: {args.rounds}")
    print(f"load average: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")
    for label, (store, hand) in results.items():
        unit = f"{args.batch} per call" if label == "batch" else "1 report per call"
        store_rate, hand_rate = median(r.rate for r in store), median(r.rate for r in hand)
        store_cpu, hand_cpu = median(r.cpu_us for r in store), median(r.cpu_us for r in hand)
        print(
            f"{label} ({unit}): store {store_rate:.0f} reports/s, hand-written "
            f"{hand_rate:.0f}: ratio {store_rate / hand_rate:.2f} "
            f"(rounds: store {spread([r.rate for r in store])}, "
            f"hand-written {spread([r.rate for r in hand])}); "
            f"CPU per report (client + PostgreSQL) {store_cpu:.0f} vs {hand_cpu:.0f} us: "
            f"ratio {hand_cpu / store_cpu:.2f} (client {split(store, 'client_us')} vs "
            f"{split(hand, 'client_us')}, PostgreSQL {split(store, 'server_us')} vs "
            f"{split(hand, 'server_us')})"
        )


class Round:
    """One side's round: reports per second, and CPU per report in microseconds, of this
    process and of every PostgreSQL backend of the bench database (from /proc): the rate
    follows whatever else the machine runs, the CPU much less."""

    def __init__(self, rate: float, client_us: float, server_us: float) -> None:
        self.rate, self.client_us, self.server_us = rate, client_us, server_us
        self.cpu_us = client_us + server_us


def backend_cpu(probe: psycopg.Connection[Any]) -> float:
    """CPU seconds used so far by the backends of `probe`'s database (Linux, local server)."""
    database = probe.execute("SELECT current_database()").fetchone()
    assert database is not None
    return cpu_seconds(backend_pids(probe, database[0]))


def compare(
    store: Callable[[], int], hand: Callable[[], int], rounds: int, probe: psycopg.Connection[Any]
) -> tuple[list[Round], list[Round]]:
    store_rounds: list[Round] = []
    hand_rounds: list[Round] = []
    for round_number in range(rounds):
        order = [(store, store_rounds), (hand, hand_rounds)]
        if round_number % 2:
            order.reverse()
        for function, results in order:
            client, server = time.process_time(), backend_cpu(probe)
            began = time.perf_counter()
            count = function()
            elapsed = time.perf_counter() - began
            client, server = time.process_time() - client, backend_cpu(probe) - server
            results.append(Round(count / elapsed, 1e6 * client / count, 1e6 * server / count))
    return store_rounds, hand_rounds


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def split(rounds: list[Round], part: str) -> str:
    return f"{median(getattr(r, part) for r in rounds):.0f}"


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


if __name__ == "__main__":
    main()
