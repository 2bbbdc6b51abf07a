"""Status notifications: publish-to-receive latency, and what a signal handler pays.

    .venv/bin/python bench/notify.py [--count 10000] [--rate 2000] [--calls 10000] [--rounds 3]

Redis from $FLOWWORKER_BENCH_REDIS_URL, else redis://127.0.0.1:6379/0; channels get a
prefix unique to this run. No database: the results are built in memory, exactly as
`persistence.upsert` returns them.

* latency: --count notifications handed to `StatusNotifier.publish_changes` at --rate per
  second (a busy worker's pace) and in one burst; a subscriber in another process stamps
  each on arrival. Latency = arrival - the moment `publish_changes` was called, so it
  includes the queue, the background thread, Redis and the subscriber's parsing.
* handler cost: the time one `publish_changes([result])` call takes, --calls calls per
  round, Redis up vs down (a port where nothing listens), in interleaved rounds. "down,
  full" is the same once the queue is full and every call drops.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from flowworker.notification import organization_channel
from flowworker.notify import StatusNotifier
from persistence.reports import TaskReport, UpsertOutcome, UpsertResult
from persistence.status import ExecutionStatus

REDIS_URL = os.environ.get("FLOWWORKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_results(count: int, organization_id: uuid.UUID) -> list[UpsertResult]:
    flow_execution_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    return [
        UpsertResult(
            outcome=UpsertOutcome.UPDATED,
            report=TaskReport(
                flow_execution_id, "bench", idx, ExecutionStatus.RUNNING, celery_task_id=str(idx)
            ),
            task_execution_id=uuid.uuid4(),
            organization_id=organization_id,
            status=ExecutionStatus.RUNNING,
            version=2,
            attempt=0,
            updated_at=now,
        )
        for idx in range(count)
    ]


def subscriber(channel: str, count: int, ready: Connection, out: Connection) -> None:
    """Stamp each notification on arrival (wall clock: the publisher is another process)."""
    pubsub = redis.Redis.from_url(REDIS_URL).pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=10)
    ready.send(True)
    arrivals: dict[str, tuple[float, float]] = {}
    deadline = time.monotonic() + 120
    while len(arrivals) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message is not None and message["type"] == "message":
            arrived = time.time()
            payload = json.loads(message["data"])
            sent_at = dt.datetime.fromisoformat(payload["sent_at"]).timestamp()
            arrivals[payload["id"]] = (sent_at, arrived)
    out.send(arrivals)


def measure_latency(
    count: int, rate: float | None
) -> tuple[list[float], list[float], list[float], float, float]:
    """Latencies in ms (call to arrival, split at `sent_at`, when the thread sent it), and
    the seconds from the first call to the last publish and to the last arrival."""
    organization_id = uuid.uuid4()
    prefix = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    results = make_results(count, organization_id)
    context = multiprocessing.get_context("spawn")
    ready_recv, ready_send = context.Pipe(duplex=False)
    out_recv, out_send = context.Pipe(duplex=False)
    process = context.Process(
        target=subscriber,
        args=(organization_channel(prefix, organization_id), count, ready_send, out_send),
    )
    process.start()
    ready_recv.recv()
    notifier = StatusNotifier(REDIS_URL, prefix)
    notifier.publish_changes([])  # start the thread outside the measurement
    sent: dict[str, float] = {}
    interval = 1 / rate if rate else 0.0
    started = time.perf_counter()
    for position, result in enumerate(results):
        if interval:
            # pace by the clock (a sleep overshoots; the next one is shorter to make up)
            ahead = started + position * interval - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        sent[str(result.task_execution_id)] = time.time()
        notifier.publish_changes([result])
    while notifier.stats().published < count and time.perf_counter() < started + 120:
        time.sleep(0.0005)
    published = time.perf_counter() - started
    arrivals: dict[str, tuple[float, float]] = out_recv.recv()
    process.join(30)
    notifier.close()
    last = max((arrived for _, arrived in arrivals.values()), default=time.time())
    first = min(sent.values())
    if len(arrivals) != count:
        print(f"  warning: received {len(arrivals)} of {count}")
    total = [(arrived - sent[key]) * 1000 for key, (_, arrived) in arrivals.items()]
    in_notifier = [(sent_at - sent[key]) * 1000 for key, (sent_at, _) in arrivals.items()]
    on_the_wire = [(arrived - sent_at) * 1000 for sent_at, arrived in arrivals.values()]
    return total, in_notifier, on_the_wire, published, last - first


def measure_handler(notifier: StatusNotifier, results: list[UpsertResult]) -> list[float]:
    """Microseconds per `publish_changes([result])` call."""
    costs = []
    clock = time.perf_counter_ns
    for result in results:
        batch = [result]
        before = clock()
        notifier.publish_changes(batch)
        costs.append((clock() - before) / 1000)
    return costs


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, Redis {REDIS_URL}")
    redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    print(f"redis-server {redis_version}, redis-py {redis.__version__}")
    print("load average before: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))

    print(f"publish -> Redis -> subscriber latency, {args.count} notifications")
    for label, rate in ((f"paced at {args.rate:.0f}/s", args.rate), ("one burst", None)):
        latencies, in_notifier, on_the_wire, published, received = measure_latency(args.count, rate)
        print(
            f"  {label:<16} p50 {percentile(latencies, 0.5):8.3f} ms   "
            f"p99 {percentile(latencies, 0.99):8.3f} ms   max {max(latencies):8.2f} ms   "
            f"published {args.count / published:,.0f}/s, received {args.count / received:,.0f}/s"
        )
        for part, values in (("call->sent", in_notifier), ("sent->received", on_the_wire)):
            print(
                f"    {part:<14} p50 {percentile(values, 0.5):8.3f} ms   "
                f"p99 {percentile(values, 0.99):8.3f} ms"
            )

    print(f"\npublish_changes([result]) cost, {args.calls} calls per round, {args.rounds} rounds")
    organization_id = uuid.uuid4()
    costs: dict[str, list[float]] = {"Redis up": [], "Redis down": [], "Redis down, full": []}
    for _ in range(args.rounds):
        up = StatusNotifier(REDIS_URL, f"bench-{uuid.uuid4().hex[:6]}", queue_size=args.calls)
        down = StatusNotifier(f"redis://127.0.0.1:{unused_port()}/0", queue_size=args.calls)
        for notifier in (up, down):
            notifier.publish_changes([])  # thread started, as after a worker's first task
        time.sleep(0.2)
        costs["Redis up"] += measure_handler(up, make_results(args.calls, organization_id))
        costs["Redis down"] += measure_handler(down, make_results(args.calls, organization_id))
        costs["Redis down, full"] += measure_handler(
            down, make_results(args.calls, organization_id)
        )
        assert down.stats().dropped == args.calls
        assert down.stats().published == 0
        up.close(timeout=30)
        down.close(timeout=0.1)
    baseline = statistics.mean(costs["Redis up"])
    for label, values in costs.items():
        mean = statistics.mean(values)
        print(
            f"  {label:<17} mean {mean:6.2f} us   p50 {percentile(values, 0.5):6.2f} us   "
            f"p99 {percentile(values, 0.99):6.2f} us   max {max(values):8.1f} us   "
            f"ratio to up {mean / baseline:4.2f}"
        )
    print("\nload average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
