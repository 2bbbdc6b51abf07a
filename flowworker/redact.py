"""A task's arguments as the `input` of its record, with secrets masked."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"


def task_input(
    args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None, secret_keys: Iterable[str]
) -> Any:
    """``{"args": [...], "kwargs": {...}}``, or None for a task called with no arguments.

    Any mapping value whose key contains one of `secret_keys` (case-insensitive) is masked,
    at any depth, including dicts passed positionally.
    """
    args = list(args or ())
    kwargs = dict(kwargs or {})
    if not args and not kwargs:
        return None
    keys = _lowered(secret_keys if isinstance(secret_keys, tuple) else tuple(secret_keys))
    return {"args": redact(args, keys), "kwargs": redact(kwargs, keys)}


@functools.lru_cache(maxsize=16)
def _lowered(secret_keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(key.lower() for key in secret_keys)


_PLAIN = (str, int, float, bool, type(None))


def redact(value: Any, secret_keys: tuple[str, ...], _depth: int = 0) -> Any:
    if type(value) in _PLAIN or _depth > 50:
        return value
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and any(secret in key.lower() for secret in secret_keys)
            else redact(item, secret_keys, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, secret_keys, _depth + 1) for item in value]
    return value
