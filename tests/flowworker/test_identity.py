"""Execution identities assigned without a worker: publish-time and worker-side resolution."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from flowworker import identity
from flowworker.config import Settings
from flowworker.plugin import Plugin
from persistence.database import create_database_engine
from persistence.schema import upgrade_database


def test_a_retry_of_a_message_published_without_the_plugin_gets_a_new_idx(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'flowworker.db'}"
    upgrade_database(create_database_engine(url))
    plugin = Plugin(None, Settings(database_url=url, spool_dir=tmp_path / "spool"))
    task_id = str(uuid.uuid4())
    # the worker resolves the first attempt of a message that carries no identity
    request = SimpleNamespace(id=task_id, root_id=task_id, group=None, retries=0)
    first = identity.identity_of(plugin, request, "t")
    assert first is not None
    assert first.task_execution_idx == 0
    # Task.retry re-publishes it through the plugin before attempt 0 is written
    headers = {"id": task_id, "task": "t", "root_id": task_id, "retries": 1}
    retry = identity.assign_at_publish(plugin, headers)
    assert retry is not None
    assert retry.flow_execution_id == first.flow_execution_id
    assert retry.task_execution_idx != first.task_execution_idx, "the retry is a new record"
    plugin.recorder.close()


def test_a_retry_published_while_the_database_was_away_is_resolved_as_a_new_execution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'flowworker.db'}"
    upgrade_database(create_database_engine(url))
    plugin = Plugin(None, Settings(database_url=url, spool_dir=tmp_path / "spool"))
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {"id": task_id, "task": "t", "root_id": task_id, "retries": 0}
    first = identity.assign_at_publish(plugin, headers)
    assert first is not None
    assert first.task_execution_idx == 0

    def database_away(*args: Any, **kwargs: Any) -> int:
        raise OperationalError("allocate", {}, Exception("connection refused"))

    # Task.retry re-publishes the same headers with retries + 1; no idx can be allocated,
    # so the message leaves with the first attempt's identity (the handler only logs)
    retry_headers = {**headers, "retries": 1}
    monkeypatch.setattr(plugin.recorder, "allocate_idx", database_away)
    with pytest.raises(OperationalError):
        identity.assign_at_publish(plugin, retry_headers)
    monkeypatch.undo()
    # the worker runs the retry once the database is back
    request = SimpleNamespace(**{**retry_headers, "group": None})
    second = identity.identity_of(plugin, request, "t")
    assert second is not None
    assert second.flow_execution_id == first.flow_execution_id
    assert second.task_execution_idx != first.task_execution_idx, "the retry is a new record"
    assert identity.identity_of(plugin, request, "t") == second, "resolved once"
    plugin.recorder.close()
