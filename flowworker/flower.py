"""Flower shows each task's flowworker identity: flow execution, task name and idx.

Flower calls its `format_task` option on every task it renders (the tasks table and a
task's page). `format_task` here looks the record up by Celery task id and attempt (the
indexed `celery_task_id` column), and appends the identity to the name Flower displays:

    tests.add [#3 · flow execution 6b0f...]
    load_orders [fetch#0 · flow execution 1c9e...]   (a flow task named differently)

Flower's event loop is single-threaded and this runs in it, so lookups are cached: a found
identity never changes and is kept (up to `MAX_ENTRIES`); a miss (the record is not written
yet) is asked again after `MISS_TTL` seconds. A lookup that fails leaves the task as it is.
Lookups run in the configured organization (`FLOWWORKER_ORGANIZATION`); with row-level
security, tasks of other organizations show without their identity.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from flowworker.config import Settings
from persistence.database import create_database_engine, transaction
from persistence.hierarchy import fetch_execution_key, fetch_organization_id

log = logging.getLogger(__name__)

MAX_ENTRIES = 20_000
MISS_TTL = 5.0


@dataclass(frozen=True, slots=True)
class TaskIdentity:
    flow_execution_id: uuid.UUID
    task_name: str
    task_execution_idx: int

    def label(self, celery_task_name: str | None) -> str:
        name = "" if self.task_name == celery_task_name else self.task_name
        return f"[{name}#{self.task_execution_idx} · flow execution {self.flow_execution_id}]"


class IdentityLookup:
    """Celery task id and attempt -> flowworker identity, from the database, cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._organization_id: uuid.UUID | None = None
        self._found: OrderedDict[tuple[str, int], TaskIdentity] = OrderedDict()
        self._missed: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def fetch_identity(self, celery_task_id: str, attempt: int) -> TaskIdentity | None:
        key = (celery_task_id, attempt)
        with self._lock:
            if key in self._found:
                return self._found[key]
            if time.monotonic() < self._missed.get(key, 0.0):
                return None
        found = self._query(celery_task_id, attempt)
        with self._lock:
            if found is None:
                if len(self._missed) > MAX_ENTRIES:
                    self._missed.clear()
                self._missed[key] = time.monotonic() + MISS_TTL
            else:
                self._missed.pop(key, None)
                self._found[key] = found
                while len(self._found) > MAX_ENTRIES:
                    self._found.popitem(last=False)
        return found

    def _query(self, celery_task_id: str, attempt: int) -> TaskIdentity | None:
        if self._engine is None:
            self._engine = create_database_engine(self.settings.database_url, pool_size=1)
        if self._organization_id is None:
            with self._engine.connect() as connection:
                self._organization_id = fetch_organization_id(
                    connection, self.settings.organization
                )
        with transaction(self._engine, self._organization_id) as connection:
            key = fetch_execution_key(connection, celery_task_id, attempt)
        return None if key is None else TaskIdentity(*key)


_lookup: IdentityLookup | None = None


def _default_lookup() -> IdentityLookup:
    global _lookup
    if _lookup is None:
        _lookup = IdentityLookup(Settings.load())
    return _lookup


def format_task(task: Any) -> Any:
    """Flower's `format_task` hook: gets a copy of a Celery event-state Task, returns it."""
    task_id = getattr(task, "uuid", None)
    if not task_id:
        return task
    try:
        identity = _default_lookup().fetch_identity(
            str(task_id), int(getattr(task, "retries", 0) or 0)
        )
    except Exception:
        log.warning("flowworker: no identity for task %s", task_id, exc_info=True)
        return task
    if identity is not None:
        task.name = f"{task.name or ''} {identity.label(task.name)}".strip()
    return task
