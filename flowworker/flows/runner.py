"""Running flows: start, advance, cancel and re-execute flow executions.

    from flowworker.flows import FlowRunner, load_flow
    runner = FlowRunner(app)                      # the Celery app whose workers run the tasks
    flow_execution_id = runner.run(load_flow("examples/etl.yaml"), {"source": "in.json"})
    runner.rerun(flow_execution_id, "transform")  # stale downstream, new idx values
    runner.cancel(flow_execution_id)

Each operation is one transaction that decides and records; task messages are published
after it commits. Workers advance the flow as each task finishes (`flowworker.flows.worker`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

from flowworker.config import Settings
from flowworker.flows.definition import FlowDefinition
from flowworker.flows.dispatch import publish_dispatches
from flowworker.flows.engine import Dispatch, advance_flow_execution
from flowworker.flows.errors import FlowVersionConflict
from flowworker.flows.inputs import resolve_inputs
from flowworker.flows.rerun import RerunOutcome, rerun_in_transaction
from persistence.database import create_database_engine, transaction
from persistence.flows import (
    fetch_dispatches,
    fetch_flow_version,
    insert_flow,
    lock_flow_execution,
    update_flow_execution_status,
)
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.reports import TaskReport, utcnow
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

if TYPE_CHECKING:
    from celery import Celery

_IN_FLIGHT = (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
#: bounds re-advancing after publish failures (each one settles at least one execution)
_MAX_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    #: False when the flow execution had already finished (nothing was changed)
    cancelled: bool
    status: ExecutionStatus
    revoked_celery_task_ids: tuple[str, ...]


def store_flow(
    connection: Connection, organization_id: uuid.UUID, definition: FlowDefinition
) -> uuid.UUID:
    """The stored flow of this name and version, storing it on first use."""
    document = definition.to_document()
    existing = fetch_flow_version(connection, organization_id, definition.name, definition.version)
    if existing is None:
        return insert_flow(
            connection,
            organization_id,
            definition.name,
            definition.version,
            document,
            definition.task_names,
        )
    if existing.definition != document:
        raise FlowVersionConflict(
            f"flow {definition.name!r} version {definition.version!r} is already stored with "
            "a different definition; give the changed flow a new version"
        )
    return existing.id


class FlowRunner:
    def __init__(
        self,
        app: Celery,
        *,
        engine: Engine | None = None,
        settings: Settings | None = None,
        queue: str | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or Settings.load(app.conf)
        self.engine = engine or create_database_engine(
            self.settings.database_url, json_max_bytes=self.settings.json_max_bytes
        )
        self.queue = queue
        self._organization_id: uuid.UUID | None = None

    def fetch_organization_id(self) -> uuid.UUID:
        if self._organization_id is None:
            with transaction(self.engine) as connection:
                self._organization_id = ensure_organization(connection, self.settings.organization)
        return self._organization_id

    def run(self, definition: FlowDefinition, inputs: Mapping[str, Any] | None = None) -> uuid.UUID:
        """Create a flow execution of `definition` and dispatch the tasks that can start."""
        resolved = resolve_inputs(definition, inputs)
        organization_id = self.fetch_organization_id()
        with transaction(self.engine, organization_id) as connection:
            flow_id = store_flow(connection, organization_id, definition)
            flow_execution_id = create_flow_execution(
                connection, organization_id, flow_id=flow_id, inputs=resolved
            )
        self.advance(flow_execution_id)
        return flow_execution_id

    def advance(self, flow_execution_id: uuid.UUID, *, completed_task: str | None = None) -> None:
        """Decide and record (one transaction), then publish; a message that cannot be
        published is recorded `failed`, and the flow advances again (its retry policy).
        `completed_task`: see `advance_flow_execution`."""
        organization_id = self.fetch_organization_id()
        for _ in range(_MAX_ROUNDS):
            with transaction(self.engine, organization_id) as connection:
                dispatches = advance_flow_execution(
                    connection,
                    flow_execution_id,
                    redact_keys=self.settings.redact_keys,
                    completed_task=completed_task,
                )
            completed_task = None
            if not self.publish(flow_execution_id, dispatches):
                return

    def publish(self, flow_execution_id: uuid.UUID, dispatches: Sequence[Dispatch]) -> bool:
        """Publish; True when some could not be published (and were recorded failed)."""
        failures = publish_dispatches(self.app, dispatches, queue=self.queue)
        if not failures:
            return False
        reports = [
            TaskReport(
                flow_execution_id,
                dispatch.identity.task_name,
                dispatch.identity.task_execution_idx,
                ExecutionStatus.FAILED,
                error={"message": f"could not publish the task: {exc}", "type": "PublishError"},
            )
            for dispatch, exc in failures
        ]
        with transaction(self.engine, self.fetch_organization_id()) as connection:
            upsert_task_executions(connection, reports)
        return True

    def cancel(self, flow_execution_id: uuid.UUID, *, actor: str = "system") -> CancelOutcome:
        """Mark the flow execution and its queued and running executions `cancelled`, then
        revoke their Celery tasks (terminating running ones)."""
        with transaction(self.engine, self.fetch_organization_id()) as connection:
            locked = lock_flow_execution(connection, flow_execution_id)
            if locked.status.is_terminal:
                return CancelOutcome(False, locked.status, ())
            in_flight = [
                row
                for row in fetch_dispatches(connection, flow_execution_id)
                if row.status in _IN_FLIGHT
            ]
            error = {"message": "cancelled with the flow execution", "type": "Cancelled"}
            upsert_task_executions(
                connection,
                [
                    TaskReport(
                        flow_execution_id,
                        row.task_name,
                        row.task_execution_idx,
                        ExecutionStatus.CANCELLED,
                        error=error,
                        modified_by=actor,
                    )
                    for row in in_flight
                ],
            )
            update_flow_execution_status(
                connection, flow_execution_id, ExecutionStatus.CANCELLED, utcnow()
            )
        task_ids = tuple(row.celery_task_id for row in in_flight if row.celery_task_id)
        if task_ids:
            self.app.control.revoke(list(task_ids), terminate=True)
        return CancelOutcome(True, ExecutionStatus.CANCELLED, task_ids)

    def rerun(
        self,
        flow_execution_id: uuid.UUID,
        from_task: str,
        *,
        dry_run: bool = False,
        actor: str = "system",
    ) -> RerunOutcome:
        """Re-execute `from_task` and everything downstream of it; see `flowworker.flows.rerun`."""
        with transaction(self.engine, self.fetch_organization_id()) as connection:
            outcome = rerun_in_transaction(
                connection,
                flow_execution_id,
                from_task,
                dry_run=dry_run,
                actor=actor,
                redact_keys=self.settings.redact_keys,
            )
        if outcome.dispatches and self.publish(flow_execution_id, outcome.dispatches):
            self.advance(flow_execution_id)
        return outcome


__all__ = ["CancelOutcome", "FlowRunner", "store_flow"]
