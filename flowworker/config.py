"""Settings: explicit arguments, then Celery config keys, then environment, then defaults.

Each setting NAME is read from the Celery config key ``flowworker_NAME`` or the environment
variable ``FLOWWORKER_NAME`` (upper case): database_url (default ``sqlite:///flowworker.db``),
redis_url (none: notifications off), organization (``default``), json_max_bytes (1 MiB),
spool_dir (``~/.cache/flowworker/spool``), redact_keys (comma-separated; password, token,
secret, ...), flower_url (none), channel_prefix (``flowworker``), journal_fsync (false:
the journal survives a killed process; true: also a machine crash, at a disk flush per
report), writer (``process``: a worker starts a writer process beside its pool and its task
processes only append to their journals; ``thread``: every process writes its own reports
from a thread), writer_nice (19: how much lower than the tasks' the CPU priority of the
writer process is, 0 to 19; a writer thread takes at most 5 of it, see `THREAD_NICE_MAX`; 0
leaves both alone), queued_write_delay (5 seconds: how long a `queued` report waits before
it is written, and then only if no worker has recorded the execution by then; 0 writes it
with the next batch), running_write_delay (0.2 seconds: how long a task runs before its
`running` report is written; one that finishes sooner costs one report, its finished one,
which says when it started; 0 writes `running` as the task starts).
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

#: A writer *thread* is never niced more than this: a thread that holds Python's GIL while
#: the scheduler passes it over would hold back every other thread of its process (the
#: tasks'); a writer process has no such neighbours and takes `writer_nice` whole.
THREAD_NICE_MAX = 5

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
    #: the writer's nice increment: its work waits while the tasks need the CPU
    writer_nice: int = 19
    #: seconds a `queued` report waits in memory; written only if no worker recorded the
    #: execution meanwhile (a task that starts at once costs no row write at publish)
    queued_write_delay: float = 5.0
    #: seconds a task runs before its `running` report is written; one that finishes
    #: sooner is written once, finished, saying when it started (0: at once)
    running_write_delay: float = 0.2
    #: who writes a worker's reports: "process" (a writer process beside the pool; the
    #: task processes only append to their journals) or "thread" (each process its own)
    writer: str = "process"

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
    if name in ("queued_write_delay", "running_write_delay"):
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 <= seconds <= 3600:
            raise ConfigurationError(
                f"{name} must be a number of seconds from 0 to 3600, not {raw!r}"
            )
        return seconds
    if name == "writer":
        text = str(raw).strip().lower()
        if text not in ("process", "thread"):
            raise ConfigurationError(f"{name} must be process or thread, not {raw!r}")
        return text
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
