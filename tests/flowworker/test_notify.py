"""StatusNotifier against real Redis servers: the shared one, and private ones that a test
kills, pauses and restarts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections import defaultdict

import pytest
from sqlalchemy import Engine

from flowworker.notification import (
    InvalidNotification,
    Notification,
    encode_result,
    flow_execution_channel,
    organization_channel,
)
from flowworker.notify import StatusNotifier
from persistence.errors import ConfigurationError
from persistence.status import ExecutionStatus
from tests.flowworker.notify_support import (
    free_port,
    listen,
    receive_messages,
    record,
    reports_for,
    running_redis_server,
    shared_redis_url,
    unique_prefix,
    wait_for,
)
from tests.persistence.helpers import make_flow_execution

pytestmark = pytest.mark.redis

QUEUED, RUNNING, COMPLETED = (
    ExecutionStatus.QUEUED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.COMPLETED,
)


def test_each_change_is_published_once_on_the_organization_and_flow_channels(
    pg_engine: Engine,
) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    org_channel = organization_channel(prefix, organization_id)
    flow_channel = flow_execution_channel(prefix, organization_id, flow_execution_id)
    assert flow_channel == f"{prefix}:org:{organization_id}:flow-execution:{flow_execution_id}"
    pubsub = listen(url, org_channel, flow_channel)
    notifier = StatusNotifier(url, prefix)
    try:
        [result] = record(pg_engine, reports_for(flow_execution_id, RUNNING, 1, "extract"))
        notifier.publish_changes([result])
        messages = receive_messages(pubsub, 2)
    finally:
        notifier.close()
        pubsub.close()

    assert {m["channel"].decode() for m in messages} == {org_channel, flow_channel}
    assert messages[0]["data"] == messages[1]["data"]
    payload = json.loads(messages[0]["data"])
    assert payload["id"] == str(result.task_execution_id)
    assert payload["organization_id"] == str(organization_id)
    assert payload["flow_execution_id"] == str(flow_execution_id)
    assert (payload["task_name"], payload["task_execution_idx"]) == ("extract", 0)
    assert payload["status"] == "running"
    assert (payload["attempt"], payload["version"]) == (0, 1)
    assert dt.datetime.fromisoformat(payload["updated_at"]) == result.updated_at
    assert payload["celery_task_id"] == "celery-0"
    assert dt.datetime.fromisoformat(payload["sent_at"]) >= result.updated_at
    wait_for(lambda: notifier.stats().published == 1, what="the publish to be counted")


def test_results_that_changed_nothing_are_not_published(pg_engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    pubsub = listen(url, organization_channel(prefix, organization_id))
    notifier = StatusNotifier(url, prefix)
    try:
        [completed] = record(pg_engine, reports_for(flow_execution_id, COMPLETED, 1))
        [refused] = record(pg_engine, reports_for(flow_execution_id, RUNNING, 1))
        [repeated] = record(pg_engine, reports_for(flow_execution_id, COMPLETED, 1))
        notifier.publish_changes([refused, repeated])
        notifier.publish_changes([completed])
        # one thread publishes in order: had the others been sent, they would come first
        [message] = receive_messages(pubsub, 1)
    finally:
        notifier.close()
        pubsub.close()
    assert (refused.changed, repeated.changed) == (False, False)
    assert json.loads(message["data"])["status"] == "completed"


def test_a_subscriber_sees_each_records_changes_in_order(pg_engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    organization_id, flow_execution_id = make_flow_execution(pg_engine)
    pubsub = listen(url, organization_channel(prefix, organization_id))
    notifier = StatusNotifier(url, prefix, batch_size=7)  # bursts that split mid-record
    tasks = 40
    try:
        for status in (QUEUED, RUNNING, COMPLETED):
            for report in reports_for(flow_execution_id, status, tasks):
                notifier.publish_changes(record(pg_engine, [report]))
        messages = receive_messages(pubsub, 3 * tasks)
    finally:
        notifier.close()
        pubsub.close()
    seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for message in messages:
        payload = json.loads(message["data"])
        seen[payload["id"]].append((payload["version"], payload["status"]))
    assert len(seen) == tasks
    for history in seen.values():
        assert history == [(1, "queued"), (2, "running"), (3, "completed")]


def test_a_full_queue_drops_and_counts_without_blocking_or_raising(
    pg_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _, flow_execution_id = make_flow_execution(pg_engine)
    results = record(pg_engine, reports_for(flow_execution_id, QUEUED, 12))
    # Nothing listens on this port: the notifier never connects, so nothing is drained.
    notifier = StatusNotifier(
        f"redis://127.0.0.1:{free_port()}/0", unique_prefix(), queue_size=5, drop_log_interval=0
    )
    caplog.set_level(logging.WARNING, logger="flowworker.notify")
    try:
        for result in results:
            notifier.publish_changes([result])
        stats = notifier.stats()
        assert (stats.dropped, stats.queue_depth, stats.published) == (7, 5, 0)
        wait_for(lambda: notifier.stats().errors, what="a connection error to be counted")
        assert notifier.stats().connected is False
        assert "Connection" in (notifier.stats().last_error or "")
        wait_for(lambda: "dropped 7 notifications since" in caplog.text, what="the drop warning")
    finally:
        notifier.close(timeout=0.5)
    # what close() could not publish is dropped and counted too
    wait_for(lambda: notifier.stats().dropped == 12, what="the 5 queued to count as dropped")
    assert notifier.stats().queue_depth == 0
    assert "notifier closed with 5 notifications unpublished" in caplog.text
    notifier.publish_changes(results[:1])  # after close: counted as dropped, never raised
    assert notifier.stats().dropped == 13


def test_publish_changes_never_waits_for_a_paused_redis(pg_engine: Engine) -> None:
    _, flow_execution_id = make_flow_execution(pg_engine)
    first, *rest = record(pg_engine, reports_for(flow_execution_id, QUEUED, 201))
    with running_redis_server() as server:
        prefix = unique_prefix()
        pubsub = listen(server.url, organization_channel(prefix, first.organization_id))
        notifier = StatusNotifier(server.url, prefix, socket_timeout=120)
        try:
            notifier.publish_changes([first])
            receive_messages(pubsub, 1)
            wait_for(lambda: notifier.stats().published == 1, what="the first publish")
            server.pause()  # accepts nothing, answers nothing: the worst kind of slow
            try:
                for result in rest:
                    notifier.publish_changes([result])
                # every call returned while Redis could not take a single message
                wait_for(lambda: notifier.stats().queue_depth == 200, what="200 queued")
                assert notifier.stats().published == 1
            finally:
                server.resume()
            receive_messages(pubsub, 200)
            # the subscriber can see the messages before the notifier has read Redis's
            # replies and counted them
            wait_for(lambda: notifier.stats().published == 201, what="201 counted")
        finally:
            notifier.close()
            pubsub.close()


def test_the_notifier_resumes_after_redis_restarts(pg_engine: Engine) -> None:
    _, flow_execution_id = make_flow_execution(pg_engine)
    before, during, after = record(pg_engine, reports_for(flow_execution_id, QUEUED, 3))
    with running_redis_server() as server:
        prefix = unique_prefix()
        channel = organization_channel(prefix, before.organization_id)
        notifier = StatusNotifier(server.url, prefix, reconnect_delay_max=0.5)
        try:
            pubsub = listen(server.url, channel)
            notifier.publish_changes([before])
            receive_messages(pubsub, 1)
            pubsub.close()
            server.stop()
            notifier.publish_changes([during])
            wait_for(lambda: notifier.stats().errors, what="the notifier to notice")
            assert notifier.stats().connected is False
            server.start()
            pubsub = listen(server.url, channel)
            notifier.publish_changes([after])
            # `during` may have gone out before this subscriber was back: wait for `after`
            wait_for(
                lambda: any(
                    json.loads(m["data"])["id"] == str(after.task_execution_id)
                    for m in receive_messages(pubsub, 1)
                ),
                what="the notification published after the restart",
            )
            wait_for(lambda: notifier.stats().published == 3, what="the backlog to be sent")
            assert notifier.stats().connected is True
            pubsub.close()
        finally:
            notifier.close()


def test_a_forked_child_publishes_through_its_own_thread_and_connection(
    pg_engine: Engine,
) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    _, flow_execution_id = make_flow_execution(pg_engine)
    in_parent, in_child = record(pg_engine, reports_for(flow_execution_id, QUEUED, 2))
    pubsub = listen(url, organization_channel(prefix, in_parent.organization_id))
    notifier = StatusNotifier(url, prefix)
    try:
        notifier.publish_changes([in_parent])
        receive_messages(pubsub, 1)
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                notifier.publish_changes([in_child])
                notifier.close(timeout=20)
                stats = notifier.stats()
                code = 0 if (stats.published, stats.dropped, stats.errors) == (1, 0, 0) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        [message] = receive_messages(pubsub, 1)
        assert json.loads(message["data"])["id"] == str(in_child.task_execution_id)
        assert notifier.stats().published == 1  # the parent's counters are its own
    finally:
        notifier.close()
        pubsub.close()


def test_close_publishes_what_is_queued(pg_engine: Engine) -> None:
    url, prefix = shared_redis_url(), unique_prefix()
    _, flow_execution_id = make_flow_execution(pg_engine)
    results = record(pg_engine, reports_for(flow_execution_id, QUEUED, 2000))
    pubsub = listen(url, organization_channel(prefix, results[0].organization_id))
    notifier = StatusNotifier(url, prefix)
    notifier.publish_changes(results)
    notifier.close(timeout=30)
    try:
        assert notifier.stats().published == 2000
        assert notifier.stats().queue_depth == 0
        ids = [json.loads(m["data"])["id"] for m in receive_messages(pubsub, 2000)]
        assert ids == [str(result.task_execution_id) for result in results]
    finally:
        pubsub.close()


def test_rejects_a_queue_that_cannot_hold_anything() -> None:
    with pytest.raises(ConfigurationError, match="queue_size"):
        StatusNotifier("redis://127.0.0.1:6379/0", queue_size=0)


def test_the_published_payload_reads_back_as_the_notification_of_the_result(
    pg_engine: Engine,
) -> None:
    _, flow_execution_id = make_flow_execution(pg_engine)
    [result] = record(pg_engine, reports_for(flow_execution_id, COMPLETED, 1))
    sent_at = dt.datetime.now(dt.UTC)
    decoded = Notification.from_json(encode_result(result, sent_at.isoformat()))
    assert decoded == Notification.from_result(result).stamped(sent_at)
    assert Notification.from_json(decoded.to_json()) == decoded
    with pytest.raises(InvalidNotification, match="not a flowworker task execution"):
        Notification.from_json(b'{"type": "something else"}')
