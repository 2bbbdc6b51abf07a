"""The one status enum, and the rules for moving between statuses.

Everything else (the SQL guard of the upsert, the HTTP API, the workers) derives from
`TRANSITIONS`; no other module spells a status as a bare string.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"
    STALE = "stale"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


#: What a worker or the POST endpoint may report (the spec's list).
REPORTABLE_STATUSES = frozenset(
    {
        ExecutionStatus.QUEUED,
        ExecutionStatus.RUNNING,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    }
)

TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)

# Reports arrive late and out of order, so a forward jump (queued -> completed when the
# `running` report is still in flight) is legal; a backward one never is.
_PROGRESS = {
    ExecutionStatus.QUEUED: 0,
    ExecutionStatus.RUNNING: 1,
    ExecutionStatus.COMPLETED: 2,
    ExecutionStatus.FAILED: 2,
    ExecutionStatus.CANCELLED: 2,
}


def _allowed_targets(current: ExecutionStatus) -> frozenset[ExecutionStatus]:
    targets: set[ExecutionStatus] = set()
    if current in _PROGRESS:
        targets |= {s for s, rank in _PROGRESS.items() if rank > _PROGRESS[current]}
    if current in (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED):
        targets.add(ExecutionStatus.STALE)
    if current is not ExecutionStatus.DELETED:
        targets.add(ExecutionStatus.DELETED)
    return frozenset(targets)


#: current status -> the statuses it may move to. Same-status reports are no-ops, not moves.
TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    status: _allowed_targets(status) for status in ExecutionStatus
}


def can_transition(current: ExecutionStatus, target: ExecutionStatus) -> bool:
    return target in TRANSITIONS[current]


def allowed_transition_pairs() -> list[str]:
    """Every legal move as 'current>target', the form the SQL guard compares against."""
    return sorted(
        f"{current}>{target}" for current, targets in TRANSITIONS.items() for target in targets
    )
