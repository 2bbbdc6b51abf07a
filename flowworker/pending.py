"""A report on its way to the database, with what is needed to write it anywhere later."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from persistence.hierarchy import AdHocFlowExecution
from persistence.jsonvalue import encode_json
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus


@dataclass(frozen=True, slots=True)
class PendingReport:
    report: TaskReport
    #: the organization whose row-level-security scope the write runs in
    organization_id: uuid.UUID
    #: set for tasks no flow started: the flow execution to create when it does not exist
    ad_hoc: AdHocFlowExecution | None = None
    #: how many reports this one carries (it absorbs earlier unwritten ones)
    reports: int = 1
    #: a `queued` report that may wait out `queued_write_delay` (a task that starts soon
    #: makes it unnecessary); False for a task scheduled to run later (an ETA or countdown)
    hold: bool = True

    @property
    def key(self) -> tuple[uuid.UUID, str, int]:
        return self.report.key

    @property
    def held_back(self) -> bool:
        """A `queued` report that waits out `queued_write_delay` before it is written."""
        return self.hold and self.report.status is ExecutionStatus.QUEUED

    def absorbing(self, earlier: PendingReport) -> PendingReport:
        """This report, folding in an earlier unwritten one of the same execution
        (`TaskReport.absorb`)."""
        return PendingReport(
            self.report.absorb(earlier.report),
            self.organization_id,
            self.ad_hoc or earlier.ad_hoc,
            self.reports + earlier.reports,
        )

    def to_line(self, json_max_bytes: int) -> str:
        """One JSON line for the journal (`journal_line`)."""
        report = self.report
        return journal_line(
            {
                "flow_execution_id": report.flow_execution_id,
                "task_name": report.task_name,
                "task_execution_idx": report.task_execution_idx,
                "status": report.status.value,
                "at": report.at,
                "modified_by": report.modified_by,
                "celery_task_id": report.celery_task_id,
                "attempt": report.attempt,
                "worker": report.worker,
                "queued_at": report.queued_at,
                "started_at": report.started_at,
                "organization_id": self.organization_id,
                "ad_hoc": self.ad_hoc is not None,
                "ad_hoc_root_id": self.ad_hoc.celery_root_id if self.ad_hoc else None,
                "reports": self.reports,
                "hold": self.hold,
            },
            report.input,
            report.output,
            report.error,
            json_max_bytes,
        )

    @classmethod
    def from_line(cls, line: str | bytes) -> PendingReport:
        document = orjson.loads(line)
        organization_id = uuid.UUID(document["organization_id"])
        flow_execution_id = uuid.UUID(document["flow_execution_id"])
        report = TaskReport(
            flow_execution_id=flow_execution_id,
            task_name=document["task_name"],
            task_execution_idx=document["task_execution_idx"],
            status=document["status"],
            at=dt.datetime.fromisoformat(document["at"]),
            input=document["input"],
            output=document["output"],
            error=document["error"],
            modified_by=document["modified_by"],
            celery_task_id=document["celery_task_id"],
            attempt=document["attempt"],
            worker=document["worker"],
            queued_at=_datetime(document.get("queued_at")),
            started_at=_datetime(document.get("started_at")),
        )
        ad_hoc = (
            AdHocFlowExecution(flow_execution_id, organization_id, document["ad_hoc_root_id"])
            if document["ad_hoc"]
            else None
        )
        return cls(
            report, organization_id, ad_hoc, document.get("reports", 1), document.get("hold", True)
        )


def journal_line(
    scalars: dict[str, Any], input: Any, output: Any, error: Any, json_max_bytes: int
) -> str:
    """A report as one journal line: `scalars` (every key `PendingReport.to_line` writes;
    UUIDs and datetimes as such or as the text orjson would make of them) and the report's
    JSON values, which go through the database's own encoder and are spliced in as text,
    so that nothing is serialized twice. `PendingReport.from_line` reads it back and
    validates it."""
    text = orjson.dumps(scalars).decode()
    return (
        f'{text[:-1]},"input":{_json(input, json_max_bytes)}'
        f',"output":{_json(output, json_max_bytes)}'
        f',"error":{_json(error, json_max_bytes)}}}'
    )


def _json(value: Any, max_bytes: int) -> str:
    return "null" if value is None else encode_json(value, max_bytes)


def _datetime(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)
