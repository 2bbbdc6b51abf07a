"""One notification per status a write moved a record through."""

from __future__ import annotations

from dataclasses import replace

from persistence.reports import UpsertOutcome, UpsertResult
from persistence.status import ExecutionStatus


def steps_of(result: UpsertResult) -> list[UpsertResult]:
    """The status changes a write made, oldest first, one notification each: a report that
    folded in earlier steps (`TaskReport.steps`) moved its record through them too. A
    record that existed already was past `queued` (its writer announced that), and one
    that had started already keeps its own start time (its `running` was announced by
    whoever wrote it: a redelivered task's first worker, say)."""
    report = result.report
    steps = report.steps
    if len(steps) == 1:
        return [result]
    if result.outcome is not UpsertOutcome.CREATED:
        started_here = result.started_at == report.started_at
        passed = tuple(
            step
            for step in steps[:-1]
            if step is not ExecutionStatus.QUEUED
            and (step is not ExecutionStatus.RUNNING or started_here)
        )
        steps = (*passed, steps[-1])
    times = {ExecutionStatus.QUEUED: report.queued_at, ExecutionStatus.RUNNING: report.started_at}
    first_version = result.version - len(steps) + 1
    return [
        replace(
            result,
            status=step,
            version=first_version + n,
            updated_at=times.get(step) or result.updated_at,
        )
        if n < len(steps) - 1
        else result
        for n, step in enumerate(steps)
        if first_version + n >= 1
    ]
