"""Many writers, one truth: 8 processes race 16,000 reports over 500 shared keys.

Each process builds its own engine and applies its 2,000 reports in random order, some one
per transaction and some in batches (which may name one key several times). Afterwards:
exactly one row per key, each in the status the transition rules allow given the reports
for that key, a history that is a legal chain, and outcomes that account for every change.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
import traceback
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlalchemy import Engine, select

from persistence.database import create_database_engine, transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.models import TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport, UpsertOutcome
from persistence.status import TERMINAL_STATUSES, ExecutionStatus, can_transition
from persistence.upsert import upsert_task_execution, upsert_task_executions

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 8
REPORTS_PER_PROCESS = 2000
KEYS = 500
FLOW_EXECUTIONS = 5
TASK_NAMES = 20
STATUSES = (
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
)
Key = tuple[uuid.UUID, str, int]


def make_keys(flow_execution_ids: list[uuid.UUID]) -> list[Key]:
    keys = [
        (flow_execution_ids[n % FLOW_EXECUTIONS], f"task-{n % TASK_NAMES}", n // TASK_NAMES)
        for n in range(KEYS)
    ]
    assert len(set(keys)) == KEYS
    return keys


def plan_reports(seed: int, keys: list[Key]) -> list[tuple[int, ExecutionStatus]]:
    """(key number, status) pairs: every key at least once, the rest at random, shuffled."""
    rng = random.Random(seed)
    plan = [(k, rng.choice(STATUSES)) for k in range(len(keys))]
    plan += [
        (rng.randrange(len(keys)), rng.choice(STATUSES))
        for _ in range(REPORTS_PER_PROCESS - len(keys))
    ]
    rng.shuffle(plan)
    return plan


def plan_groups(seed: int, total: int) -> list[int]:
    """Sizes of the consecutive groups one transaction each applies: singles and batches."""
    rng = random.Random(seed + 1000)
    sizes: list[int] = []
    while sum(sizes) < total:
        size = 1 if rng.random() < 0.7 else rng.randint(2, 80)
        sizes.append(min(size, total - sum(sizes)))
    return sizes


def worker(
    number: int,
    url: str,
    organization_id: uuid.UUID,
    keys: list[Key],
    start: Any,
    results: Any,
) -> None:
    """One writer process: its own engine, its own reports; sends back every outcome."""
    try:
        engine = create_database_engine(url, pool_size=1, max_overflow=0)
        plan = plan_reports(number, keys)
        outcomes: list[tuple[int, str, str, str, int]] = []
        start.wait(timeout=60)
        position = 0
        for size in plan_groups(number, len(plan)):
            group = plan[position : position + size]
            position += size
            reports = [TaskReport(*keys[k], status=status) for k, status in group]
            with transaction(engine, organization_id) as connection:
                if size == 1:
                    applied = [upsert_task_execution(connection, reports[0])]
                else:
                    applied = upsert_task_executions(connection, reports)
            outcomes += [
                (k, status.value, r.outcome.value, r.status.value, r.version)
                for (k, status), r in zip(group, applied, strict=True)
            ]
        engine.dispose()
        results.put((number, outcomes, None))
    except BaseException:
        results.put((number, [], traceback.format_exc()))


def expected_statuses(reported: set[ExecutionStatus]) -> set[ExecutionStatus]:
    """The statuses a record may end in, given every status reported for it, whatever their
    order and interleaving.

    Among the reportable statuses the rules only ever move forward (queued -> running ->
    completed | failed | cancelled, with forward jumps), and a terminal status is final. So
    once any terminal report has been applied the record is terminal, in the status of the
    first terminal report that was applied: one of those reported. Without a terminal
    report a `running` one leaves it running; with only `queued` reports it stays queued.
    """
    terminal = reported & TERMINAL_STATUSES
    if terminal:
        return set(terminal)
    if ExecutionStatus.RUNNING in reported:
        return {ExecutionStatus.RUNNING}
    return {ExecutionStatus.QUEUED}


def test_expected_statuses_is_what_the_rules_allow() -> None:
    """`expected_statuses` agrees with a brute force over every order of the reports."""
    from itertools import permutations

    for mask in range(1, 2 ** len(STATUSES)):
        reported = [s for i, s in enumerate(STATUSES) if mask >> i & 1]
        finals = set()
        for order in permutations(reported):
            current = order[0]
            for status in order[1:]:
                if can_transition(current, status):
                    current = status
            finals.add(current)
        assert finals == expected_statuses(set(reported)), reported


def test_eight_processes_racing_over_shared_keys(postgres_url: str, pg_engine: Engine) -> None:
    with transaction(pg_engine) as connection:
        organization_id = ensure_organization(connection, "racers")
        flow_execution_ids = [
            create_flow_execution(connection, organization_id) for _ in range(FLOW_EXECUTIONS)
        ]
    keys = make_keys(flow_execution_ids)

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=worker, args=(n, postgres_url, organization_id, keys, start, results)
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    start.wait(timeout=120)
    began = time.monotonic()
    collected = [results.get(timeout=240) for _ in processes]
    elapsed = time.monotonic() - began
    for process in processes:
        process.join(timeout=30)
    errors = {number: error for number, _, error in collected if error}
    assert errors == {}, "\n".join(errors.values())
    assert all(process.exitcode == 0 for process in processes)

    # --- every report is accounted for --------------------------------------------------
    reported: dict[int, set[ExecutionStatus]] = defaultdict(set)
    changes: Counter[tuple[int, str]] = Counter()
    total = 0
    for _, outcomes, _ in collected:
        total += len(outcomes)
        for k, status, outcome, result_status, _version in outcomes:
            reported[k].add(ExecutionStatus(status))
            changes[k, outcome] += 1
            if outcome != UpsertOutcome.REFUSED:
                assert result_status == status
            else:
                # refused: the record was (and stays) where this report cannot take it
                assert result_status != status
                assert not can_transition(ExecutionStatus(result_status), ExecutionStatus(status))
    assert total == PROCESSES * REPORTS_PER_PROCESS
    assert len(reported) == KEYS

    # --- the end state -------------------------------------------------------------------
    key_number = {key: n for n, key in enumerate(keys)}
    with transaction(pg_engine) as connection:
        rows = connection.execute(select(TaskExecution.__table__)).all()
        events = connection.execute(
            select(TaskExecutionEvent.__table__).order_by(TaskExecutionEvent.id)
        ).all()
    assert len(rows) == KEYS
    by_id = {row.id: row for row in rows}
    history: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for event in events:
        assert event.task_execution_id in by_id
        history[event.task_execution_id].append(event)

    for row in rows:
        k = key_number[row.flow_execution_id, row.task_name, row.task_execution_idx]
        status = ExecutionStatus(row.status)
        assert row.organization_id == organization_id
        assert status in expected_statuses(reported[k]), (status, reported[k])

        chain = history[row.id]
        assert chain, f"no history for {k}"
        assert chain[0].from_status is None
        for before, after in itertools.pairwise(chain):
            assert after.from_status == before.to_status
            assert can_transition(
                ExecutionStatus(after.from_status), ExecutionStatus(after.to_status)
            )
        assert [event.version for event in chain] == list(range(1, len(chain) + 1))
        assert chain[-1].to_status == row.status
        assert row.version == len(chain)
        assert {ExecutionStatus(event.to_status) for event in chain} <= reported[k]
        assert {event.organization_id for event in chain} == {organization_id}

        # exactly one report created the record; each other change was one UPDATED report
        assert changes[k, UpsertOutcome.CREATED] == 1
        assert changes[k, UpsertOutcome.UPDATED] == len(chain) - 1

    print(f"\n{total} reports from {PROCESSES} processes in {elapsed:.1f} s")
