"""The subscriber API against real Redis servers and a real database: scopes, the version
filter, and reconnecting with catch-up after Redis restarts."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from sqlalchemy import Engine

from flowworker.notification import Notification
from flowworker.notify import StatusNotifier
from flowworker.subscribe import Subscription, subscribe
from persistence.database import create_database_engine
from persistence.status import ExecutionStatus
from tests.flowworker.notify_support import (
    free_port,
    record,
    reports_for,
    running_redis_server,
    shared_redis_url,
    unique_prefix,
)
from tests.persistence.helpers import make_flow_execution

pytestmark = pytest.mark.redis

QUEUED, RUNNING, COMPLETED = (
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.COMPLETED,
)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def take(subscription: Subscription, count: int, timeout: float = 60.0) -> list[Notification]:
    """Exactly the next `count` notifications (fails the test if they do not come)."""
    found: list[Notification] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        notification = subscription.receive(timeout=1)
        if notification is not None:
            found.append(notification)
    assert len(found) == count, f"received {len(found)} of {count}: {found}"
    return found


def test_a_flow_execution_subscription_sees_only_its_flow_execution(pg_engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, watched = make_flow_execution(pg_engine)
    _, other = make_flow_execution(pg_engine)
    notifier = StatusNotifier(url, prefix)
    with (
        subscribe(url, organization_id, watched, channel_prefix=prefix) as flow_live,
        subscribe(url, organization_id, channel_prefix=prefix) as org_live,
    ):
        notifier.publish_changes(record(pg_engine, reports_for(other, QUEUED, 2)))
        notifier.publish_changes(record(pg_engine, reports_for(watched, QUEUED, 2)))
        notifier.close()
        flow_seen = take(flow_live, 2)
        org_seen = take(org_live, 4)
    assert {n.flow_execution_id for n in flow_seen} == {watched}
    assert [n.flow_execution_id for n in org_seen] == [other, other, watched, watched]
    first = flow_seen[0]
    assert isinstance(first.status, ExecutionStatus)
    assert first.status is QUEUED
    assert (first.task_name, first.task_execution_idx, first.version) == ("task", 0, 1)
    assert first.organization_id == organization_id
    assert first.catch_up is False
    assert first.sent_at is not None


def test_repeated_and_stale_notifications_are_dropped(pg_engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    queued, running, completed = (
        record(pg_engine, reports_for(flow_execution_id, status, 1))
        for status in (QUEUED, RUNNING, COMPLETED)
    )
    [other] = record(pg_engine, reports_for(flow_execution_id, QUEUED, 1, "other"))
    notifier = StatusNotifier(url, prefix)
    with subscribe(url, organization_id, flow_execution_id, channel_prefix=prefix) as live:
        for batch in (queued, running, running, queued, completed, running, [other]):
            notifier.publish_changes(batch)
        notifier.close()
        seen = take(live, 4)
    assert [(n.status, n.version) for n in seen] == [
        (QUEUED, 1),
        (RUNNING, 2),
        (COMPLETED, 3),
        (QUEUED, 1),
    ]
    assert seen[-1].id == other.task_execution_id


def test_catch_up_since_yields_the_current_records_first(engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(engine)
    record(engine, reports_for(flow_execution_id, QUEUED, 3))
    record(engine, reports_for(flow_execution_id, COMPLETED, 1))
    _, elsewhere = make_flow_execution(engine)
    record(engine, reports_for(elsewhere, QUEUED, 1))
    with subscribe(
        url,
        organization_id,
        flow_execution_id,
        engine=engine,
        channel_prefix=prefix,
        catch_up_since=EPOCH,
    ) as live:
        caught_up = take(live, 3)
        # ... and then the live ones, with the same filter
        notifier = StatusNotifier(url, prefix)
        notifier.publish_changes(record(engine, reports_for(flow_execution_id, RUNNING, 2)))
        notifier.close()
        [live_one] = take(live, 1)
    assert all(n.catch_up for n in caught_up)
    assert all(n.sent_at is None for n in caught_up)
    assert sorted((n.task_execution_idx, n.status, n.version) for n in caught_up) == [
        (0, COMPLETED, 2),
        (1, QUEUED, 1),
        (2, QUEUED, 1),
    ]
    # idx 0 was already completed (version 2): its refused `running` never comes; idx 1 does
    assert (live_one.task_execution_idx, live_one.status, live_one.catch_up) == (1, RUNNING, False)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["flow execution", "organization"])
def test_after_redis_restarts_the_subscriber_catches_up_the_final_statuses_it_missed(
    pg_engine: Engine, scope: str
) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    tasks = 20
    with running_redis_server() as server:
        prefix = unique_prefix()
        notifier = StatusNotifier(server.url, prefix, reconnect_delay_max=0.5)
        watched = flow_execution_id if scope == "flow execution" else None
        with subscribe(
            server.url,
            organization_id,
            watched,
            engine=pg_engine,
            channel_prefix=prefix,
            reconnect_delay_max=0.5,
        ) as live:
            notifier.publish_changes(record(pg_engine, reports_for(flow_execution_id, QUEUED, 20)))
            assert {n.status for n in take(live, tasks)} == {QUEUED}

            server.stop()
            # Written while Redis is down; the notifier's copies go nowhere we can rely on.
            record(pg_engine, reports_for(flow_execution_id, RUNNING, tasks))
            record(pg_engine, reports_for(flow_execution_id, COMPLETED, tasks))
            assert live.receive(timeout=1) is None  # notices the loss, tries to reconnect
            assert not live.connected
            server.start()

            caught_up = take(live, tasks)
            assert live.reconnects == 1
            assert all(n.catch_up for n in caught_up)
            assert sorted(n.task_execution_idx for n in caught_up) == list(range(tasks))
            assert {(n.status, n.version) for n in caught_up} == {(COMPLETED, 3)}

            # live notifications resume, through the notifier that reconnected by itself
            [extra] = record(pg_engine, reports_for(flow_execution_id, QUEUED, 1, "extra"))
            notifier.publish_changes([extra])
            [resumed] = take(live, 1)
            assert (resumed.id, resumed.catch_up) == (extra.task_execution_id, False)
        notifier.close()


def test_subscribing_while_redis_is_down_catches_up_once_it_is_back(pg_engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    with running_redis_server() as server:
        server.stop()
        with subscribe(
            server.url,
            organization_id,
            engine=pg_engine,
            channel_prefix=unique_prefix(),
            reconnect_delay_max=0.5,
        ) as live:
            assert not live.connected
            [completed] = record(pg_engine, reports_for(flow_execution_id, COMPLETED, 1))
            assert live.receive(timeout=0.5) is None
            server.start()
            [caught_up] = take(live, 1)
    assert (caught_up.id, caught_up.status, caught_up.catch_up) == (
        completed.task_execution_id,
        COMPLETED,
        True,
    )


def test_an_organization_catch_up_reads_only_that_organization(engine: Engine) -> None:
    organization_id, flow_execution_id = make_flow_execution(engine, "acme")
    _, foreign_flow_execution = make_flow_execution(engine, "globex")
    record(engine, reports_for(flow_execution_id, QUEUED, 2))
    record(engine, reports_for(foreign_flow_execution, QUEUED, 2))
    with Subscription(
        shared_redis_url(),
        organization_id,
        engine=engine,
        channel_prefix=unique_prefix(),
        catch_up_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
    ) as live:
        caught_up = take(live, 2)
        assert live.receive(timeout=0.5) is None
    assert {n.flow_execution_id for n in caught_up} == {flow_execution_id}
    assert uuid.UUID(str(caught_up[0].organization_id)) == organization_id


def test_an_unreachable_database_does_not_stop_live_notifications(pg_engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    nowhere = create_database_engine(f"postgresql://root@127.0.0.1:{free_port()}/nothing")
    notifier = StatusNotifier(url, prefix)
    with subscribe(
        url,
        organization_id,
        flow_execution_id,
        engine=nowhere,
        channel_prefix=prefix,
        catch_up_since=EPOCH,  # a catch-up that fails, and is retried later
    ) as live:
        notifier.publish_changes(record(pg_engine, reports_for(flow_execution_id, QUEUED, 1)))
        notifier.close()
        [notification] = take(live, 1)
    nowhere.dispose()
    assert (notification.status, notification.catch_up) == (QUEUED, False)
