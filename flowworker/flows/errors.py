"""Errors of flow definitions and flow runs (all under `FlowworkerError`).

FlowworkerError
 +-- FlowError
      +-- FlowValidationError     a flow file with problems; lists every one, with its line
      +-- FlowInputError          --input that is not what the flow declares
      +-- FlowVersionConflict     the same name and version stored with another definition
      +-- RerunRefused            a re-execution the flow execution's state does not allow
      +-- TemplateError           a template that cannot be resolved when a task is due
"""

from __future__ import annotations

from dataclasses import dataclass

from persistence.errors import FlowworkerError


class FlowError(FlowworkerError):
    pass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with a flow file; `line` is 1-based (0: the file as a whole)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class FlowValidationError(FlowError):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems)
        listing = "\n".join(f"  {source}:{problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"{source} has {count} problem{'s' if count != 1 else ''}:\n{listing}")


class FlowInputError(FlowError):
    pass


class FlowVersionConflict(FlowError):
    pass


class RerunRefused(FlowError):
    pass


class TemplateError(FlowError):
    pass
