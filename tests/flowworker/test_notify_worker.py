"""Notifications from real Celery workers (prefork), through a Redis of this module alone
that one test stops in the middle of a run."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

import flowworker
from flowworker.notification import Notification, organization_channel
from flowworker.subscribe import Subscription, subscribe
from persistence.database import transaction
from persistence.hierarchy import ensure_organization
from persistence.status import ExecutionStatus
from tests.flowworker.celery_app import sleep
from tests.flowworker.notify_support import (
    RedisServer,
    listen,
    running_redis_server,
    unique_prefix,
    wait_for,
)
from tests.flowworker.recording.conftest import (
    Recording,
    recording_factory,  # noqa: F401 (the recording tests' fixture, shared here)
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

QUEUED, RUNNING, COMPLETED = (
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.COMPLETED,
)


class NotifyWorld:
    def __init__(self, recording: Recording, server: RedisServer, prefix: str, org: uuid.UUID):
        self.recording = recording
        self.server = server
        self.prefix = prefix
        self.organization_id = org

    def subscribe(self, engine: Engine | None = None) -> Subscription:
        return subscribe(
            self.server.url,
            self.organization_id,
            engine=engine,
            channel_prefix=self.prefix,
            reconnect_delay_max=0.5,
        )


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, postgres_engine: Engine) -> Iterator[NotifyWorld]:
    with running_redis_server() as server:
        recording: Recording = request.getfixturevalue("recording_factory")()
        prefix, organization = unique_prefix(), f"notify-{uuid.uuid4().hex[:8]}"
        with transaction(postgres_engine) as connection:
            organization_id = ensure_organization(connection, organization)
        settings = {
            "redis_url": server.url,
            "channel_prefix": prefix,
            "organization": organization,
        }
        # the publishing side (this process) and the worker side both notify
        flowworker.install(recording.app, **settings)
        recording.start_worker(
            pool="prefork",
            concurrency=2,
            env={f"FLOWWORKER_{name.upper()}": value for name, value in settings.items()},
        )
        yield NotifyWorld(recording, server, prefix, organization_id)
        recording.stop()


class Collector:
    """Drains a subscription in a thread, so the test can act while notifications flow."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.received: list[Notification] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            notification = self.subscription.receive(timeout=0.2)
            if notification is not None:
                self.received.append(notification)

    def final_statuses(self) -> dict[uuid.UUID, Notification]:
        latest: dict[uuid.UUID, Notification] = {}
        for notification in list(self.received):
            latest[notification.flow_execution_id] = notification
        return latest

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.subscription.close()


def test_a_subscriber_sees_queued_running_completed_for_each_task(world: NotifyWorld) -> None:
    raw = listen(world.server.url, organization_channel(world.prefix, world.organization_id))
    collector = Collector(world.subscribe())
    try:
        results = [sleep.delay(0) for _ in range(20)]
        flow_executions = {uuid.UUID(result.id) for result in results}
        wait_for(
            lambda: (
                {n.flow_execution_id for n in collector.received if n.status is COMPLETED}
                >= flow_executions
            ),
            what="a completed notification for each of the 20 tasks",
            timeout=120,
        )
    finally:
        collector.stop()
    per_task: dict[uuid.UUID, list[tuple[int, ExecutionStatus]]] = defaultdict(list)
    for notification in collector.received:
        per_task[notification.flow_execution_id].append((notification.version, notification.status))
    # What a subscriber gets, after the version filter: each task's changes, in order.
    for flow_execution_id in flow_executions:
        assert per_task[flow_execution_id][-1] == (3, COMPLETED)
        versions = [version for version, _ in per_task[flow_execution_id]]
        assert versions == sorted(versions)
    # On the wire, every change was published: queued, running and completed, once each
    # at least (the queued report may come from the publishing process or the worker).
    lifecycle = {(1, QUEUED), (2, RUNNING), (3, COMPLETED)}
    wire: dict[uuid.UUID, set[tuple[int, ExecutionStatus]]] = defaultdict(set)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(wire[fe] != lifecycle for fe in flow_executions):
        message = raw.get_message(timeout=1)
        if message is not None and message["type"] == "message":
            payload = Notification.from_json(message["data"])
            wire[payload.flow_execution_id].add((payload.version, payload.status))
    raw.close()
    assert all(wire[fe] == lifecycle for fe in flow_executions), dict(wire)


def test_redis_stopped_mid_run_costs_no_task_and_catch_up_recovers_final_statuses(
    world: NotifyWorld, postgres_engine: Engine
) -> None:
    tasks = 200  # 0.03 s each on two processes: a run of a few seconds, stopped midway
    collector = Collector(world.subscribe(engine=postgres_engine))
    try:
        results = [sleep.delay(0.03) for _ in range(tasks)]
        flow_executions = {uuid.UUID(result.id) for result in results}

        def completed_live() -> int:
            latest = collector.final_statuses()
            return sum(latest[fe].status is COMPLETED for fe in flow_executions & set(latest))

        def completed_in_database() -> set[uuid.UUID]:
            rows = world.recording.records(organization_id=world.organization_id)
            return {r.flow_execution_id for r in rows if r.status == "completed"} & flow_executions

        wait_for(lambda: completed_live() >= 20, what="20 completions before the stop")
        world.server.stop()
        stopped_with = completed_live()
        # the run goes on without Redis: records keep completing in the database
        wait_for(
            lambda: len(completed_in_database()) >= min(tasks, stopped_with + 60),
            what="60 more completions while Redis is down",
            timeout=120,
        )
        world.server.start()

        # every task completes and is recorded, whatever Redis did
        wait_for(
            lambda: completed_in_database() == flow_executions,
            what="every task completed in the database",
            timeout=180,
        )
        wait_for(
            lambda: (
                all(
                    n.status is COMPLETED
                    for fe, n in collector.final_statuses().items()
                    if fe in flow_executions
                )
                and flow_executions <= set(collector.final_statuses())
            ),
            what="the subscriber to know every task's final status",
            timeout=120,
        )
        assert collector.subscription.reconnects >= 1
        caught_up = [
            n
            for n in collector.received
            if n.catch_up and n.status is COMPLETED and n.flow_execution_id in flow_executions
        ]
        assert caught_up, "the completions during the outage came from the catch-up"

        # notifications resume: new tasks are seen live, from the workers' own notifiers
        after = [sleep.delay(0) for _ in range(5)]
        resumed = {uuid.UUID(result.id) for result in after}
        wait_for(
            lambda: (
                {
                    n.flow_execution_id
                    for n in collector.received
                    if not n.catch_up and n.status is COMPLETED
                }
                >= resumed
            ),
            what="live notifications after the restart",
            timeout=120,
        )
    finally:
        collector.stop()
