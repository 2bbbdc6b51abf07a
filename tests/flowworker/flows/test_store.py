"""The store refuses a report naming a task that is not in its flow (both backends), and
stores each flow version once."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from flowworker.flows import FlowVersionConflict, parse_flow
from flowworker.flows.runner import store_flow
from persistence.database import transaction
from persistence.errors import TaskNotInFlow, UnknownFlowExecution
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

FLOW = """
name: etl
version: "1"
tasks:
  - name: Extract
    task: tasks.echo
  - name: load
    task: tasks.echo
    depends_on: Extract
"""


def test_a_task_name_outside_the_flow_is_refused(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
        flow_id = store_flow(connection, organization_id, parse_flow(FLOW))
        flow_execution_id = create_flow_execution(connection, organization_id, flow_id=flow_id)
        ad_hoc_id = create_flow_execution(connection, organization_id)
    with transaction(engine) as connection:
        [result] = upsert_task_executions(
            connection, [TaskReport(flow_execution_id, "Extract", 0, ExecutionStatus.QUEUED)]
        )
        assert result.changed
    # names are case-sensitive: "extract" is not "Extract"
    for name in ("extract", "transform"):
        refused = f"task_name '{name}' is not a task of the flow"
        with pytest.raises(TaskNotInFlow, match=refused), transaction(engine) as connection:
            upsert_task_executions(
                connection,
                [
                    TaskReport(flow_execution_id, "load", 0, ExecutionStatus.QUEUED),
                    TaskReport(flow_execution_id, name, 0, ExecutionStatus.QUEUED),
                ],
            )
    with transaction(engine) as connection:  # the batch with the bad name wrote nothing
        [load] = upsert_task_executions(
            connection, [TaskReport(flow_execution_id, "load", 0, ExecutionStatus.QUEUED)]
        )
        assert load.changed
        # an ad-hoc Celery workflow has no task list: any name goes
        [anything] = upsert_task_executions(
            connection, [TaskReport(ad_hoc_id, "tasks.whatever", 0, ExecutionStatus.QUEUED)]
        )
        assert anything.changed


def test_an_unknown_flow_execution_is_still_reported_as_such(engine: Engine) -> None:
    import uuid

    with pytest.raises(UnknownFlowExecution), transaction(engine) as connection:
        upsert_task_executions(connection, [TaskReport(uuid.uuid4(), "x", 0, "queued")])


def test_a_flow_version_is_stored_once_and_never_silently_changed(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
        first = store_flow(connection, organization_id, parse_flow(FLOW))
        # same definition, other comments and layout: the same stored flow
        again = store_flow(connection, organization_id, parse_flow("# hi\n" + FLOW))
        assert again == first
        changed = parse_flow(FLOW.replace("tasks.echo", "tasks.count", 1))
        with pytest.raises(FlowVersionConflict, match="give the changed flow a new version"):
            store_flow(connection, organization_id, changed)
        bumped = parse_flow(FLOW.replace('version: "1"', 'version: "2"'))
        assert store_flow(connection, organization_id, bumped) != first
