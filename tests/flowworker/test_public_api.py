"""The names users import from `flowworker` are exactly what `__all__` promises."""

from __future__ import annotations

import flowworker
from persistence.errors import FlowworkerError


def test_every_exported_name_exists() -> None:
    missing = [name for name in flowworker.__all__ if not hasattr(flowworker, name)]
    assert missing == []


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(flowworker).items()
        if not name.startswith("_") and not isinstance(value, type(flowworker))
    }
    assert public - {"annotations"} == set(flowworker.__all__)


def test_exported_exceptions_share_one_root() -> None:
    exceptions = [
        getattr(flowworker, name)
        for name in flowworker.__all__
        if isinstance(getattr(flowworker, name), type)
        and issubclass(getattr(flowworker, name), Exception)
    ]
    assert exceptions
    assert all(issubclass(exception, FlowworkerError) for exception in exceptions)
