"""The database's share of recording, alone: a diagnostic mode of `worker_overhead.py`.

Runs beside a bare Celery worker (mode `floor`) and writes, for every task counted done,
the row flowworker would write for it (one finished report that says when the task was
queued and started, its input and output, and its ad-hoc flow execution), in batches every
50 ms through the store's batch upsert, from this one process at nice 19. So PostgreSQL does
the same work as with flowworker while no Celery process runs a line of recording code:
the throughput of that mode is a ceiling for any recorder that keeps this data model and
writes to a database on the same machine.

    python bench/database_floor.py <database url> <redis url> <done counter> <tasks>
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid

import redis

from persistence.database import create_database_engine, transaction
from persistence.hierarchy import AdHocFlowExecution, ensure_flow_executions, ensure_organization
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions


def main() -> None:
    database_url, redis_url, counter, total = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
    )
    os.nice(19)
    engine = create_database_engine(database_url, pool_size=1)
    client = redis.Redis.from_url(redis_url)
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "default")
    written = 0
    while written < total:
        time.sleep(0.05)
        done = min(int(client.get(counter) or 0), total)
        if done == written:
            continue
        now = dt.datetime.now(dt.UTC)
        reports, executions = [], []
        for n in range(written, done):
            flow_execution_id = uuid.uuid4()
            executions.append(AdHocFlowExecution(flow_execution_id, organization_id, None))
            reports.append(
                TaskReport(
                    flow_execution_id=flow_execution_id,
                    task_name="bench.noop",
                    task_execution_idx=0,
                    status=ExecutionStatus.COMPLETED,
                    at=now,
                    input={"args": [n], "kwargs": {}},
                    output=n,
                    celery_task_id=str(flow_execution_id),
                    attempt=0,
                    worker="floor@127.0.0.1",
                    queued_at=now - dt.timedelta(milliseconds=2),
                    started_at=now - dt.timedelta(milliseconds=1),
                )
            )
        with transaction(engine, organization_id) as connection:
            ensure_flow_executions(connection, executions)
            upsert_task_executions(connection, reports)
        written = done


if __name__ == "__main__":
    main()
