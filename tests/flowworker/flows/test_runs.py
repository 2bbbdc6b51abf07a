"""Flows run on real workers (prefork, Redis broker, PostgreSQL): outputs feed templates,
loops and retries get their own idx, failures stop what depends on them, re-execution
marks stale and runs again, cancellation revokes."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from flowworker.flows import RerunRefused, parse_flow
from flowworker.flows.runner import store_flow
from flowworker.flows.worker import ADVANCE_TASK
from persistence.database import transaction
from persistence.flows import NewDispatch, insert_dispatches
from persistence.hierarchy import create_flow_execution
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus
from persistence.upsert import upsert_task_executions
from tests.flowworker.flows.conftest import Flows, wait_for_status


def test_templates_resolve_across_tasks(flows: Flows) -> None:
    flow_execution_id = flows.run(
        """
inputs: {label: null}
tasks:
  - name: a
    task: tasks.echo
    input: {value: {rows: [1, 2, 3], label: "{{inputs.label}}"}}
  - name: b
    task: tasks.echo
    input: {value: "{{a.output.rows}}"}
  - name: c
    task: tasks.echo
    input: {value: "{{a.output.label}}-{{b.output.1}}"}
""",
        {"label": "x"},
    )
    assert flows.wait_finished(flow_execution_id) == "completed"
    records = flows.by_task(flow_execution_id)
    assert [r.output for r in records["b"]] == [[1, 2, 3]]
    assert [r.output for r in records["c"]] == ["x-2"]
    assert records["c"][0].input == {"args": [], "kwargs": {"value": "x-2"}}
    assert {name: [r.task_execution_idx for r in rs] for name, rs in records.items()} == {
        "a": [0],
        "b": [0],
        "c": [0],
    }


def test_a_loop_of_five_produces_idx_0_to_4(flows: Flows) -> None:
    flow_execution_id = flows.run(
        """
tasks:
  - name: items
    task: tasks.echo
    input: {value: [{n: 1}, {n: 2}, {n: 3}, {n: 4}, {n: 5}]}
  - name: each
    task: tasks.format_text
    loop: "{{items.output}}"
    input: {template: "item {n}", values: "{{item}}"}
  - name: joined
    task: tasks.echo
    input: {value: "{{each.output}}"}
"""
    )
    assert flows.wait_finished(flow_execution_id) == "completed"
    each = flows.records(flow_execution_id, task_name="each")
    assert [(r.task_execution_idx, r.status, r.output) for r in each] == [
        (n, "completed", f"item {n + 1}") for n in range(5)
    ]
    [joined] = flows.records(flow_execution_id, task_name="joined")
    assert joined.output == [f"item {n}" for n in range(1, 6)]


def test_a_retry_is_recorded_as_a_new_execution(flows: Flows) -> None:
    flow_execution_id = flows.run(
        """
tasks:
  - name: flaky
    task: tasks.fail_times
    input: {failures: 2, value: done}
    retry: {max_retries: 3, delay: 0.2}
"""
    )
    assert flows.wait_finished(flow_execution_id) == "completed"
    records = flows.records(flow_execution_id)
    assert [(r.task_execution_idx, r.attempt, r.status) for r in records] == [
        (0, 0, "failed"),
        (1, 1, "failed"),
        (2, 2, "completed"),
    ]
    assert records[0].error["type"] == "RuntimeError"
    assert "attempt 0 fails on purpose" in records[0].error["message"]
    assert records[2].output == "done"
    assert len({r.celery_task_id for r in records}) == 3


def test_retries_run_out_and_the_flow_fails(flows: Flows) -> None:
    flow_execution_id = flows.run(
        """
tasks:
  - name: flaky
    task: tasks.fail_times
    input: {failures: 5}
    retry: {max_retries: 1}
"""
    )
    assert flows.wait_finished(flow_execution_id) == "failed"
    assert [r.status for r in flows.records(flow_execution_id)] == ["failed", "failed"]


def test_a_failed_task_stops_its_downstream_while_independent_branches_finish(
    flows: Flows,
) -> None:
    flow_execution_id = flows.run(
        """
tasks:
  - name: root
    task: tasks.echo
    input: {value: 1}
  - name: bad
    task: tasks.fail_times
    input: {failures: 1, value: "{{root.output}}"}
  - name: after_bad
    task: tasks.echo
    input: {value: "{{bad.output}}"}
  - name: last
    task: tasks.echo
    depends_on: [after_bad, side]
  - name: side
    task: tasks.sleep
    input: {seconds: 1, value: "{{root.output}}"}
  - name: side_after
    task: tasks.echo
    input: {value: "{{side.output}}"}
"""
    )
    assert flows.wait_finished(flow_execution_id) == "failed"
    records = flows.by_task(flow_execution_id)
    assert [r.status for r in records["bad"]] == ["failed"]
    assert [r.status for r in records["side"]] == ["completed"]
    assert [r.output for r in records["side_after"]] == [1]
    [after_bad] = records["after_bad"]
    assert after_bad.status == "cancelled"
    assert after_bad.error == {
        "message": "not run: upstream task 'bad' failed",
        "type": "UpstreamFailed",
    }
    [last] = records["last"]
    assert last.status == "cancelled"
    assert "upstream task 'after_bad'" in last.error["message"]


def test_rerun_marks_stale_and_feeds_new_outputs_downstream(flows: Flows, tmp_path: Path) -> None:
    source = tmp_path / "source.json"
    source.write_text(json.dumps({"v": "first"}))
    flow_execution_id = flows.run(
        """
inputs: {path: null}
tasks:
  - name: a
    task: tasks.echo
    input: {value: "{{inputs.path}}"}
  - name: read
    task: tasks.read_json
    input: {path: "{{a.output}}"}
  - name: use
    task: tasks.format_text
    input: {template: "value={v}", values: "{{read.output}}"}
  - name: independent
    task: tasks.echo
    input: {value: "{{a.output}}"}
""",
        {"path": str(source)},
    )
    assert flows.wait_finished(flow_execution_id) == "completed"
    planned = flows.runner.rerun(flow_execution_id, "read", dry_run=True)
    assert planned.task_names == ("read", "use")
    assert planned.stale == (("read", 0), ("use", 0))
    assert [r.status for r in flows.records(flow_execution_id, task_name="read")] == ["completed"]

    source.write_text(json.dumps({"v": "second"}))
    outcome = flows.runner.rerun(flow_execution_id, "read")
    assert outcome.task_names == ("read", "use")
    assert flows.wait_finished(flow_execution_id) == "completed"
    records = flows.by_task(flow_execution_id)
    assert [(r.task_execution_idx, r.status) for r in records["read"]] == [
        (0, "stale"),
        (1, "completed"),
    ]
    assert [(r.task_execution_idx, r.status, r.output) for r in records["use"]] == [
        (0, "stale", "value=first"),
        (1, "completed", "value=second"),
    ]
    assert [(r.task_execution_idx, r.status) for r in records["a"]] == [(0, "completed")]
    assert [(r.task_execution_idx, r.status) for r in records["independent"]] == [(0, "completed")]
    with pytest.raises(Exception, match="has no task 'nope'"):
        flows.runner.rerun(flow_execution_id, "nope")


def test_cancel_revokes_running_and_queued_tasks(flows: Flows) -> None:
    # four 60-second sleeps on a worker of concurrency 2: two run, two wait in the queue
    flow_execution_id = flows.run(
        """
tasks:
  - name: slow
    task: tasks.sleep
    loop: [1, 2, 3, 4]
    input: {seconds: 60, value: "{{item}}"}
  - name: after
    task: tasks.echo
    input: {value: "{{slow.output}}"}
"""
    )
    wait_for_status(flows, flow_execution_id, "slow", "running")
    with pytest.raises(RerunRefused, match="still queued or running"):
        flows.runner.rerun(flow_execution_id, "slow")
    outcome = flows.runner.cancel(flow_execution_id)
    assert outcome.cancelled
    assert len(outcome.revoked_celery_task_ids) == 4
    assert flows.wait_finished(flow_execution_id, timeout=60) == "cancelled"
    records = flows.records(flow_execution_id)
    assert [(r.task_name, r.status) for r in records] == [("slow", "cancelled")] * 4
    assert not flows.runner.cancel(flow_execution_id).cancelled


def test_the_advance_message_waits_until_the_report_is_visible(flows: Flows) -> None:
    """The fallback path: a worker that could not advance in place sends an advance message;
    it retries until the report it is about is in the database, then advances."""
    definition = parse_flow(
        f"name: t{uuid.uuid4().hex[:8]}\nversion: '1'\ntasks:\n"
        "  - {name: a, task: tasks.echo}\n"
        "  - {name: b, task: tasks.echo, input: {value: '{{a.output}}'}}\n"
    )
    organization_id = flows.runner.fetch_organization_id()
    with transaction(flows.engine) as connection:
        flow_id = store_flow(connection, organization_id, definition)
        flow_execution_id = create_flow_execution(
            connection, organization_id, flow_id=flow_id, status=ExecutionStatus.RUNNING
        )
        insert_dispatches(
            connection, flow_execution_id, organization_id, [NewDispatch("a", 0, 0, 0, None)]
        )
        upsert_task_executions(
            connection, [TaskReport(flow_execution_id, "a", 0, ExecutionStatus.RUNNING)]
        )
    flows.runner.app.send_task(ADVANCE_TASK, args=[str(flow_execution_id), "a", 0])
    time.sleep(1.5)  # the advance runs, does not see a completed `a`, and retries
    assert flows.records(flow_execution_id, task_name="b") == []
    with transaction(flows.engine) as connection:
        upsert_task_executions(
            connection,
            [TaskReport(flow_execution_id, "a", 0, ExecutionStatus.COMPLETED, output=7)],
        )
    assert flows.wait_finished(flow_execution_id) == "completed"
    [b] = flows.records(flow_execution_id, task_name="b")
    assert b.output == 7
