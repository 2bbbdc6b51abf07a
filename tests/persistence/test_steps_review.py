"""Version, history and notifications agree for every sequence of folded reports.

Every record is driven through up to three reports (plain, or folding in when it was queued
and started, as the recorder sends them), each write on its own. Afterwards the history
numbers the record's versions 1..version with no gap or repeat, each event starts where
the one before ended, and the notifications the recorder derives from each write
(`flowworker.steps.steps_of`) announce every event, each once."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict

from sqlalchemy import Engine, select

from flowworker.steps import steps_of
from persistence.database import transaction
from persistence.models import TaskExecution, TaskExecutionEvent
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions
from tests.persistence.helpers import make_flow_execution

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)

# (status, folds in queued_at, folds in started_at): what a writer may send
VARIANTS = [
    (S.QUEUED, False, False),
    (S.RUNNING, False, False),
    (S.RUNNING, True, False),
    *(
        (status, queued, started)
        for status in (S.COMPLETED, S.FAILED, S.CANCELLED)
        for queued, started in itertools.product((False, True), repeat=2)
    ),
    (S.DELETED, False, False),
    (S.STALE, False, False),
]
FIRST = [(S.QUEUED, False, False), (S.RUNNING, True, False), (S.COMPLETED, True, True)]


def _report(
    flow_execution_id: uuid.UUID, idx: int, step: int, variant: tuple[S, bool, bool]
) -> TaskReport:
    status, queued, started = variant
    at = T0 + dt.timedelta(seconds=10 * step)
    return TaskReport(
        flow_execution_id,
        "t",
        idx,
        status,
        at=at + dt.timedelta(seconds=2),
        queued_at=at if queued else None,
        started_at=at + dt.timedelta(seconds=1) if started else None,
    )


def _events(engine: Engine) -> dict[int, list[tuple[str | None, str, int]]]:
    with transaction(engine) as connection:
        rows = connection.execute(
            select(
                TaskExecution.task_execution_idx,
                TaskExecutionEvent.from_status,
                TaskExecutionEvent.to_status,
                TaskExecutionEvent.version,
            )
            .join(TaskExecution, TaskExecution.id == TaskExecutionEvent.task_execution_id)
            .order_by(TaskExecutionEvent.id)
        )
        events: dict[int, list[tuple[str | None, str, int]]] = defaultdict(list)
        for row in rows:
            events[row.task_execution_idx].append((row.from_status, row.to_status, row.version))
        return events


def _versions(engine: Engine) -> dict[int, int]:
    with transaction(engine) as connection:
        rows = connection.execute(select(TaskExecution.task_execution_idx, TaskExecution.version))
        return {row.task_execution_idx: row.version for row in rows}


def _drive(
    engine: Engine,
) -> tuple[
    list[tuple[tuple[S, bool, bool], ...]],
    dict[int, list[tuple[str | None, str, int]]],
    dict[int, int],
    dict[int, list[tuple[str, int]]],
]:
    """Each sequence on its own record: (sequences, history, version and notifications of
    each record, by idx)."""
    organization_id, flow_execution_id = make_flow_execution(engine)
    sequences = [
        (first, *rest) for first in FIRST for rest in itertools.product(VARIANTS, repeat=2)
    ]
    announced: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for step in range(3):
        reports = [
            _report(flow_execution_id, idx, step, sequence[step])
            for idx, sequence in enumerate(sequences)
        ]
        with transaction(engine, organization_id) as connection:
            results = upsert_task_executions(connection, reports)
        for result in results:
            if result.changed:
                announced[result.report.task_execution_idx] += [
                    (str(s.status), s.version) for s in steps_of(result)
                ]
    return sequences, _events(engine), _versions(engine), announced


def test_version_and_history_agree_and_every_step_is_announced(engine: Engine) -> None:
    sequences, events, versions, announced = _drive(engine)
    wrong = {}
    for idx, sequence in enumerate(sequences):
        history = events[idx]
        chained = history[0][0] is None and all(
            a[1] == b[0] for a, b in itertools.pairwise(history)
        )
        numbered = [version for *_, version in history] == list(range(1, versions[idx] + 1))
        every_step_announced = set(announced[idx]) == {(to, v) for _, to, v in history}
        if not (chained and numbered and every_step_announced):
            wrong[idx] = (sequence, versions[idx], history, announced[idx])
    assert not wrong, f"{len(wrong)} wrong, e.g. {list(wrong.values())[:5]}"


def test_no_step_is_announced_twice(engine: Engine) -> None:
    sequences, _, _, announced = _drive(engine)
    repeated = {
        idx: (sequences[idx], announced[idx])
        for idx in range(len(sequences))
        if len(announced[idx]) != len(set(announced[idx]))
    }
    assert not repeated, f"{len(repeated)} records, e.g. {list(repeated.values())[:3]}"
