"""Every path of a task's life is recorded by real workers: prefork and solo pools, Redis
and RabbitMQ brokers, one worker or two on different host names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, group

from tests.flowworker.celery_app import add, fail, fan_out, flaky, secret, untracked
from tests.flowworker.recording.conftest import Recording
from tests.flowworker.workers import wait_until


@pytest.fixture(
    scope="module",
    params=["prefork-redis", "solo-redis", "prefork-rabbitmq", "two-workers-redis"],
)
def recording(request: pytest.FixtureRequest, recording_factory: Any) -> Iterator[Recording]:
    pool, broker = request.param.rsplit("-", 1)
    recording: Recording = recording_factory(broker=broker)
    if pool == "two-workers":
        recording.start_worker(concurrency=1, name="w1")
        recording.start_worker(concurrency=1, name="w2")
    else:
        recording.start_worker(pool=pool)
    yield recording
    recording.stop()


def test_success_is_recorded_with_input_output_and_celery_fields(recording: Recording) -> None:
    result = add.delay(2, 3)
    [record] = recording.wait_for(1, {"completed"}, flow_execution_id=uuid.UUID(result.id))
    assert record.queued_at is not None, "the worker states queued_at too"
    assert record.task_name == "tests.add"
    assert record.task_execution_idx == 0
    assert record.input == {"args": [2, 3], "kwargs": {}}
    assert record.output == 5
    assert record.error is None
    assert record.celery_task_id == result.id
    assert record.attempt == 0
    assert record.worker.split("-")[0] in {"w1", "w2"}
    assert record.queued_at <= record.started_at <= record.finished_at
    assert recording.history(record.id) == ["queued", "running", "completed"]


def test_failure_is_recorded_with_message_type_and_traceback(recording: Recording) -> None:
    result = fail.delay("boom")
    [record] = recording.wait_for(1, {"failed"}, flow_execution_id=uuid.UUID(result.id))
    assert record.error["message"] == "boom"
    assert record.error["type"] == "ValueError"
    assert "raise ValueError(message)" in record.error["traceback"]
    assert record.output is None


def test_autoretry_records_each_attempt_with_the_next_idx(recording: Recording) -> None:
    result = flaky.delay(2)
    records = recording.wait_for(3, {"completed", "failed"}, flow_execution_id=uuid.UUID(result.id))
    assert [(r.task_execution_idx, r.status, r.attempt) for r in records] == [
        (0, "failed", 0),
        (1, "failed", 1),
        (2, "completed", 2),
    ]
    assert records[0].error["type"] == "RuntimeError"
    assert "attempt 0 fails on purpose" in records[0].error["message"]
    assert {r.celery_task_id for r in records} == {result.id}
    assert records[2].output == "succeeded on attempt 2"


def test_group_members_get_distinct_indices(recording: Recording) -> None:
    result = group(add.s(n, n) for n in range(5)).apply_async()
    records = recording.wait_for(5, {"completed"}, flow_execution_id=uuid.UUID(result.id))
    assert sorted(r.task_execution_idx for r in records) == [0, 1, 2, 3, 4]
    assert sorted(r.output for r in records) == [0, 2, 4, 6, 8]


def test_chain_steps_share_the_root_flow_execution(recording: Recording) -> None:
    result = chain(add.s(1, 1), add.s(10), add.s(100)).apply_async()
    root_id = result.parent.parent.id
    records = recording.wait_for(3, {"completed"}, flow_execution_id=uuid.UUID(root_id))
    assert [(r.task_execution_idx, r.output) for r in records] == [(0, 2), (1, 12), (2, 112)]


def test_children_published_by_parallel_tasks_never_share_an_idx(recording: Recording) -> None:
    # two fan_out tasks run at once (two pool processes with prefork) and each publishes
    # five children into the same flow execution: ten distinct indices
    result = group(fan_out.s(5), fan_out.s(5)).apply_async()
    records = recording.wait_for(12, {"completed"}, flow_execution_id=uuid.UUID(result.id))
    children = [r for r in records if r.task_name == "tests.add"]
    assert sorted(r.task_execution_idx for r in children) == list(range(10))


def test_secrets_are_redacted_and_opted_out_tasks_are_not_recorded(recording: Recording) -> None:
    recorded = secret.delay("ann", password="hunter2", options={"api_token": "t", "depth": 1})
    skipped = untracked.delay()
    [record] = recording.wait_for(1, {"completed"}, flow_execution_id=uuid.UUID(recorded.id))
    assert record.input == {
        "args": ["ann"],
        "kwargs": {"password": "***", "options": {"api_token": "***", "depth": 1}},
    }
    recording.wait_for(1, {"completed"}, celery_task_id=recorded.id)
    assert recording.records(celery_task_id=skipped.id) == []


def test_work_spread_over_two_workers_is_recorded_once_each(recording: Recording) -> None:
    results = [add.delay(n, n) for n in range(30)]
    ids = {result.id for result in results}

    def finished() -> list[Any]:
        rows = [r for r in recording.records(task_name="tests.add") if r.celery_task_id in ids]
        return rows if sum(r.status == "completed" for r in rows) == 30 else []

    rows: list[Any] = wait_until(finished, 120)  # type: ignore[assignment]
    assert len(rows) == 30, "one record per task, none twice"
    if len(recording.workers) == 2:
        assert {r.worker.split("-")[0] for r in rows} == {"w1", "w2"}
