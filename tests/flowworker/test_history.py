from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from flowworker.config import Settings
from flowworker.history import History
from persistence.database import transaction
from persistence.errors import (
    InvalidQuery,
    InvalidStatus,
    UnknownFlowExecution,
    UnknownOrganization,
    UnknownTaskExecution,
)
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions

BOOM = {"message": "boom", "type": "ValueError", "traceback": "..."}


def history_for(engine: Engine, organization: str) -> History:
    return History(engine=engine, settings=Settings.load(organization=organization, environ={}))


def new_flow_execution(engine: Engine, organization: str) -> tuple[uuid.UUID, uuid.UUID]:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, organization)
        return organization_id, create_flow_execution(connection, organization_id)


def record(engine: Engine, organization_id: uuid.UUID, *reports: TaskReport) -> list[uuid.UUID]:
    with transaction(engine, organization_id) as connection:
        return [r.task_execution_id for r in upsert_task_executions(connection, reports)]


@pytest.fixture
def acme(engine: Engine) -> Iterator[tuple[History, uuid.UUID, list[uuid.UUID]]]:
    """History of 'acme', with one flow execution: extract failed then completed, load queued."""
    organization_id, flow_execution_id = new_flow_execution(engine, "acme")
    ids = record(
        engine,
        organization_id,
        TaskReport(flow_execution_id, "extract", 0, S.RUNNING, celery_task_id="c-0"),
        TaskReport(flow_execution_id, "extract", 0, S.FAILED, error=BOOM),
        TaskReport(flow_execution_id, "extract", 1, S.COMPLETED, output=42),
        TaskReport(flow_execution_id, "load", 0, S.QUEUED),
    )
    with history_for(engine, "acme") as history:
        yield history, flow_execution_id, ids


def test_lists_with_filters_and_ids_as_text(
    acme: tuple[History, uuid.UUID, list[uuid.UUID]],
) -> None:
    history, flow_execution_id, _ = acme
    page = history.list_task_executions(flow_execution_id=str(flow_execution_id))
    assert {(i.task_name, i.task_execution_idx) for i in page.items} == {
        ("extract", 0),
        ("extract", 1),
        ("load", 0),
    }
    assert [i.task_name for i in history.list_task_executions(statuses="queued").items] == ["load"]
    failed = history.list_task_executions(statuses=[S.FAILED, "cancelled"], task_name="extract")
    assert [(i.task_execution_idx, i.error) for i in failed.items] == [(0, BOOM)]
    assert history.list_task_executions(celery_task_id="c-0").items[0].status is S.FAILED
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert history.list_task_executions(created_after=future).items == ()
    assert len(history.list_task_executions(updated_before=future).items) == 3
    oldest = history.list_task_executions(order="oldest").items
    assert [i.id for i in oldest] == [i.id for i in reversed(history.list_task_executions().items)]


def test_iterates_over_every_page(acme: tuple[History, uuid.UUID, list[uuid.UUID]]) -> None:
    history, _, _ = acme
    expected = {i.id for i in history.list_task_executions().items}
    walked = [i.id for i in history.iter_task_executions(page_size=1)]
    assert len(walked) == len(expected) == 3
    assert set(walked) == expected
    loads = list(history.iter_task_executions(page_size=2, task_name="load", order="oldest"))
    assert [i.task_name for i in loads] == ["load"]


def test_gets_one_execution_its_attempts_history_and_flow(
    acme: tuple[History, uuid.UUID, list[uuid.UUID]],
) -> None:
    history, flow_execution_id, (first, _, second, _) = acme
    assert history.get_task_execution(str(first)).error == BOOM
    attempts = history.get_attempts(flow_execution_id, "extract")
    assert [(a.id, a.status) for a in attempts] == [(first, S.FAILED), (second, S.COMPLETED)]
    changes = history.get_status_history(first)
    assert [(c.from_status, c.to_status) for c in changes] == [
        (None, S.RUNNING),
        (S.RUNNING, S.FAILED),
    ]
    flow = history.get_flow_execution(str(flow_execution_id))
    assert flow.summary.counts_by_status == {"completed": 1, "failed": 1, "queued": 1}
    assert flow.summary.failed_tasks == ()
    assert flow.summary.finished_at is None  # load is still queued


def test_organization_is_resolved_by_name_or_id_and_scopes_everything(
    engine: Engine, acme: tuple[History, uuid.UUID, list[uuid.UUID]]
) -> None:
    history, flow_execution_id, (first, *_) = acme
    other_id, other_flow = new_flow_execution(engine, "globex")
    (other_task,) = record(engine, other_id, TaskReport(other_flow, "extract", 0, S.QUEUED))
    with history_for(engine, str(other_id)) as globex:
        assert globex.fetch_organization_id() == other_id
        assert [i.id for i in globex.list_task_executions().items] == [other_task]
        with pytest.raises(UnknownTaskExecution):
            globex.get_task_execution(first)
        with pytest.raises(UnknownFlowExecution):
            globex.get_flow_execution(flow_execution_id)
        assert globex.get_attempts(flow_execution_id, "extract") == ()
    assert other_task not in {i.id for i in history.iter_task_executions()}
    with pytest.raises(UnknownTaskExecution):
        history.get_status_history(other_task)


def test_errors_name_what_was_wrong(
    engine: Engine, acme: tuple[History, uuid.UUID, list[uuid.UUID]]
) -> None:
    history, _, _ = acme
    with pytest.raises(InvalidQuery, match="task execution id must be a UUID, not 'nope'"):
        history.get_task_execution("nope")
    with pytest.raises(InvalidQuery, match="flow execution id"):
        history.list_task_executions(flow_execution_id="12")
    with pytest.raises(InvalidStatus, match="'done'"):
        history.list_task_executions(statuses=["done"])
    with pytest.raises(InvalidQuery, match="'sideways'"):
        history.list_task_executions(order="sideways")
    with pytest.raises(UnknownOrganization, match="'initech'"):
        history_for(engine, "initech").list_task_executions()


def test_settings_come_from_the_environment(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization_id, flow_execution_id = new_flow_execution(engine, "from-env")
    record(engine, organization_id, TaskReport(flow_execution_id, "t", 0, S.QUEUED))
    monkeypatch.setenv("FLOWWORKER_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("FLOWWORKER_ORGANIZATION", "from-env")
    with History() as history:
        assert history.engine is not engine
        assert [i.task_name for i in history.list_task_executions().items] == ["t"]
