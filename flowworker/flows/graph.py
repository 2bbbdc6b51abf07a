"""The dependency graph of a flow: order, cycles, and what lies downstream of a task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(dependencies: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Unknown names are ignored (reported elsewhere)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for upstream in dependencies.get(name, ()):
            if upstream not in dependencies:
                continue
            if state.get(upstream) == 1:
                return [*path[path.index(upstream) :], upstream]
            if upstream not in state and (cycle := visit(upstream)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in dependencies:
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def topological_order(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Every task after the tasks it depends on; ties keep the definition's order."""
    ordered: list[str] = []
    placed: set[str] = set()
    remaining = list(dependencies)
    while remaining:
        ready = [name for name in remaining if all(d in placed for d in dependencies[name])]
        if not ready:
            raise ValueError(f"the dependencies of {remaining} form a cycle")
        for name in ready:
            ordered.append(name)
            placed.add(name)
        remaining = [name for name in remaining if name not in placed]
    return ordered


def downstream_of(dependencies: Mapping[str, Sequence[str]], start: str) -> list[str]:
    """`start` and every task that depends on it, directly or not, in topological order."""
    reached = {start}
    for name in topological_order(dependencies):
        if any(upstream in reached for upstream in dependencies[name]):
            reached.add(name)
    return [name for name in topological_order(dependencies) if name in reached]


__all__ = ["downstream_of", "find_cycle", "topological_order"]
