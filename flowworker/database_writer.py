"""Writing reports to the database: what a recorder's writer thread and the worker's writer
process (`flowworker.journal_writer`) share.

One transaction per organization (row-level security scopes each); ad-hoc flow executions
created first, once per process; `queued` reports of executions already recorded dropped;
the upsert; then one notification per status step, after commit. A batch the database
refuses part of is written report by report, so one bad report costs only itself; an
outage (`flowworker.outage.database_unavailable`) is raised for the caller to retry.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection, Engine

from flowworker.outage import database_unavailable
from flowworker.pending import PendingReport
from flowworker.steps import steps_of
from persistence.database import transaction
from persistence.hierarchy import (
    AdHocFlowExecution,
    ensure_flow_executions,
    ensure_organization,
    organization_id_for,
    recorded_keys,
)
from persistence.reports import UpsertResult
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions

if TYPE_CHECKING:
    from flowworker.recorder import RecorderStats

log = logging.getLogger(__name__)

_KNOWN_FLOW_EXECUTIONS_MAX = 50_000


class Notifier(Protocol):
    def publish_changes(self, results: list[UpsertResult]) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


class DatabaseWriter:
    def __init__(
        self,
        engine: Engine,
        organization: str,
        notifier: Notifier | None,
        stats: RecorderStats,
    ) -> None:
        self.engine = engine
        self.organization = organization
        self.default_organization_id = organization_id_for(organization)
        self.notifier = notifier
        self.stats = stats
        #: ad-hoc flow executions this process knows exist (bounded, oldest forgotten)
        self.known_flow_executions: dict[uuid.UUID, None] = {}
        self._organization_ensured = False

    def write(self, items: list[PendingReport]) -> None:
        """Write `items` (one transaction per organization) and notify after commit."""
        by_organization: dict[uuid.UUID, list[PendingReport]] = {}
        for item in items:
            by_organization.setdefault(item.organization_id, []).append(item)
        for organization_id, group in by_organization.items():
            try:
                results = self._write_group(organization_id, group)
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # retried later, in order, from the journal
                # the database refuses something in this batch (an unknown flow execution, a
                # task name not in its flow, a value it cannot store): find it, keep the rest
                results = self._write_one_by_one(organization_id, group)
            self.stats.written += sum(item.reports for item in group)
            self.stats.last_write_at = time.time()
            changed = [step for result in results if result.changed for step in steps_of(result)]
            if changed and self.notifier is not None:
                self.notifier.publish_changes(changed)

    def _write_group(
        self, organization_id: uuid.UUID, group: list[PendingReport]
    ) -> list[UpsertResult]:
        with transaction(self.engine, organization_id) as connection:
            group = self._without_recorded_queued(connection, group)
            new_flow_executions = [
                item.ad_hoc
                for item in group
                if item.ad_hoc is not None and item.ad_hoc.id not in self.known_flow_executions
            ]
            if new_flow_executions:
                self.ensure_default_organization(connection, new_flow_executions)
                ensure_flow_executions(connection, new_flow_executions)
            results = (
                upsert_task_executions(connection, [item.report for item in group]) if group else []
            )
        self.remember_flow_executions(execution.id for execution in new_flow_executions)
        return results

    @staticmethod
    def _without_recorded_queued(
        connection: Connection, group: list[PendingReport]
    ) -> list[PendingReport]:
        """`group` less the `queued` reports of executions already recorded: a worker got
        there first, and its report said when the task was queued (one index lookup each
        instead of a guarded upsert that would be refused)."""
        keys = [item.key for item in group if item.report.status is ExecutionStatus.QUEUED]
        if not keys:
            return group
        present = recorded_keys(connection, keys)
        if not present:
            return group
        return [
            item
            for item in group
            if item.report.status is not ExecutionStatus.QUEUED or item.key not in present
        ]

    def _write_one_by_one(
        self, organization_id: uuid.UUID, group: list[PendingReport]
    ) -> list[UpsertResult]:
        results: list[UpsertResult] = []
        for item in group:
            try:
                results += self._write_group(organization_id, [item])
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                self.stats.rejected += 1
                log.error(
                    "flowworker could not record %s[%d] -> %s: %s",
                    item.report.task_name,
                    item.report.task_execution_idx,
                    item.report.status,
                    exc,
                )
        return results

    def ensure_default_organization(
        self, connection: Connection, executions: Iterable[AdHocFlowExecution]
    ) -> None:
        default = self.default_organization_id
        if not self._organization_ensured and any(
            execution.organization_id == default for execution in executions
        ):
            ensure_organization(connection, self.organization)
            self._organization_ensured = True

    def remember_flow_executions(self, ids: Iterable[uuid.UUID]) -> None:
        known = self.known_flow_executions
        for flow_execution_id in ids:
            known[flow_execution_id] = None
        while len(known) > _KNOWN_FLOW_EXECUTIONS_MAX:
            del known[next(iter(known))]
