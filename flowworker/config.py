"""Settings: explicit arguments, then Celery config keys, then environment, then defaults.

Each setting NAME is read from the Celery config key ``flowworker_NAME`` or the environment
variable ``FLOWWORKER_NAME`` (upper case): database_url (default ``sqlite:///flowworker.db``),
redis_url (none: notifications off), organization (``default``), json_max_bytes (1 MiB),
spool_dir (``~/.cache/flowworker/spool``), redact_keys (comma-separated; password, token,
secret, ...), flower_url (none), channel_prefix (``flowworker``), journal_fsync (false:
the journal survives a killed process; true: also a machine crash, at a disk flush per
report), writer_nice (5: how much lower than the tasks' the CPU priority of the recorder's
writer thread is, 0 to 19; 0 leaves it alone).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from persistence.database import DEFAULT_DATABASE_URL
from persistence.errors import ConfigurationError
from persistence.jsonvalue import DEFAULT_MAX_BYTES

DEFAULT_REDACT_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "credentials",
    "cookie",
)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    organization: str = "default"
    json_max_bytes: int = DEFAULT_MAX_BYTES
    spool_dir: Path = Path.home() / ".cache" / "flowworker" / "spool"
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    flower_url: str | None = None
    channel_prefix: str = "flowworker"
    #: fsync the journal after every report: survives a machine crash, costs a disk flush
    journal_fsync: bool = False
    #: the writer thread's nice increment: its work waits while tasks need the CPU
    writer_nice: int = 5

    @classmethod
    def load(
        cls,
        celery_conf: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Resolve every setting: explicit overrides, Celery config, environment, default."""
        environ = os.environ if environ is None else environ
        celery_conf = celery_conf or {}
        values: dict[str, Any] = {}
        for field in fields(cls):
            if overrides.get(field.name) is not None:
                raw = overrides[field.name]
            elif celery_conf.get(f"flowworker_{field.name}") is not None:
                raw = celery_conf[f"flowworker_{field.name}"]
            elif environ.get(f"FLOWWORKER_{field.name.upper()}"):
                raw = environ[f"FLOWWORKER_{field.name.upper()}"]
            else:
                continue
            values[field.name] = _convert(field.name, raw)
        return cls(**values)


def _convert(name: str, raw: Any) -> Any:
    if name == "json_max_bytes":
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{name} must be a whole number of bytes, not {raw!r}"
            ) from None
        if value < 1024:
            raise ConfigurationError(f"{name} must be at least 1024 bytes, not {value}")
        return value
    if name == "writer_nice":
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = -1
        if not 0 <= value <= 19:
            raise ConfigurationError(f"{name} must be a whole number from 0 to 19, not {raw!r}")
        return value
    if name == "journal_fsync":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigurationError(f"{name} must be true or false, not {raw!r}")
        return text in ("1", "true", "yes", "on")
    if name == "spool_dir":
        return Path(raw).expanduser()
    if name == "redact_keys":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(item.strip().lower() for item in items if item.strip())
    return str(raw)
