"""POST /task-executions throughput and latency at concurrency 16 on loopback, side by side
with a bare endpoint of the same app (`POST /_bench/bare`: same auth, validation, thread hop
and JSON answer, no database work).

    .venv/bin/python bench/http.py [--requests 6000] [--workers 2] [--concurrency 16]
        [--baseline-tree DIR]

Starts `flowworker serve` on a free port over a PostgreSQL database of its own (created and
dropped here), then alternates bare and real rounds so that background load on the machine
hits both alike. The client is a minimal keep-alive HTTP/1.1 client on asyncio: a heavier
client (httpx) would take CPU from the server it measures on a 2-core machine.
Each connection reports a task's life as a worker would: queued, running, completed.

Besides req/s and latency it prints the CPU each request cost the server processes and the
PostgreSQL backends (from /proc; Linux, local server): on a shared machine req/s follows
the other load, CPU per request much less.

`--baseline-tree DIR` serves the POST a second time from another source tree (for example
`git archive <commit> | tar -x -C DIR`), same database, its rounds between this tree's:
a before/after comparison in one run. `--variant NAME=VALUE` does the same with this tree
and one more environment variable (a setting's effect, in one run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proc_cpu import backend_pids, children_of, cpu_seconds  # noqa: E402

from persistence.api_keys import create_api_key  # noqa: E402
from persistence.database import create_database_engine, transaction  # noqa: E402
from persistence.hierarchy import create_flow_execution, ensure_organization  # noqa: E402
from persistence.schema import upgrade_database  # noqa: E402

ADMIN_URL = os.environ.get(
    "FLOWWORKER_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"
)
LIFECYCLE = ("queued", "running", "completed")
ENDPOINT_NAMES = {
    "bare": "/_bench/bare",
    "post": "POST /task-executions",
    "baseline post": "baseline POST /task-exec.",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bodies_for(connection_no: int, count: int, flow_execution_ids: list[str]) -> list[bytes]:
    """`count` reports: tasks of this connection, each queued -> running -> completed."""
    flow_execution_id = flow_execution_ids[connection_no % len(flow_execution_ids)]
    bodies = []
    for n in range(count):
        task, step = divmod(n, len(LIFECYCLE))
        body = {
            "flow_execution_id": flow_execution_id,
            "task_name": f"task-{connection_no}",
            "task_execution_idx": task,
            "status": LIFECYCLE[step],
            "input": {"n": task} if step == 0 else None,
            "output": {"ok": True} if step == 2 else None,
        }
        bodies.append(json.dumps(body).encode())
    return bodies


async def run_connection(
    port: int, path: str, key: str, bodies: list[bytes], latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    try:
        for body in bodies:
            started = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status.split()[1] not in (b"200", b"201"):
                raise RuntimeError(f"{path} answered {status!r}: {answer[:300]!r}")
    finally:
        writer.close()


async def run_round(
    port: int, path: str, key: str, per_connection: list[list[bytes]]
) -> dict[str, float]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(run_connection(port, path, key, bodies, latencies) for bodies in per_connection)
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def server_pids(server: subprocess.Popen[bytes]) -> list[int]:
    """The `flowworker serve` process and its uvicorn worker processes."""
    return [server.pid, *children_of(server.pid)]


def database_backends(dsn: str, database: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return backend_pids(connection, database)


def start_server(
    database_url: str,
    port: int,
    workers: int,
    source_tree: Path | None = None,
    environment: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = os.environ | {"FLOWWORKER_API_BARE_ENDPOINT": "1"} | (environment or {})
    env.pop("FLOWWORKER_REDIS_URL", None)  # notifications are measured in bench/notify
    if source_tree is not None:
        # imported from there (the working directory too: uvicorn puts it on sys.path),
        # not from this tree's editable install
        env["PYTHONPATH"] = str(source_tree)
    command = [
        str(Path(sys.executable).with_name("flowworker")),
        "serve",
        "--database-url",
        database_url,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, env=env, cwd=source_tree)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(1.0)  # every worker process up, not only the first
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000, help="per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--baseline-tree", type=Path, help="also serve POST from this source tree, interleaved"
    )
    parser.add_argument(
        "--variant",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="also serve POST from a server of this tree with this environment variable "
        "(for example FLOWWORKER_API_WRITE_THREADS=40), interleaved; repeatable",
    )
    args = parser.parse_args()

    name = f"flowworker_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = make_url(ADMIN_URL)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.set(database=name).render_as_string(hide_password=False)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        engine = create_database_engine(database_url)
        upgrade_database(engine)
        with transaction(engine) as connection:
            organization_id = ensure_organization(connection, "bench")
            flow_execution_ids = [
                str(create_flow_execution(connection, organization_id)) for _ in range(4)
            ]
            key = create_api_key(connection, organization_id).plaintext
        engine.dispose()
        port = free_port()
        servers.append(start_server(database_url, port, args.workers))
        # (label, path, port, server): alternating rounds, in this order
        runs = [
            ("bare", "/_bench/bare", port, servers[0]),
            ("post", "/task-executions", port, servers[0]),
        ]
        if args.baseline_tree is not None:
            port = free_port()
            servers.append(start_server(database_url, port, args.workers, args.baseline_tree))
            runs.append(("baseline post", "/task-executions", port, servers[-1]))
        for variant in args.variant:
            name_, _, value = variant.partition("=")
            port = free_port()
            servers.append(start_server(database_url, port, args.workers, None, {name_: value}))
            runs.append((f"post {variant}", "/task-executions", port, servers[-1]))
        per_connection = args.requests // args.concurrency
        per_connection -= per_connection % len(LIFECYCLE)
        results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in runs}
        # warm-up: imports, pools, caches; every run writes tasks of its own
        for run_no, (_label, path, port, _server) in enumerate(runs):
            warm = [
                bodies_for(10_000 + run_no * 1000 + c, 30, flow_execution_ids)
                for c in range(args.concurrency)
            ]
            asyncio.run(run_round(port, path, key, warm))
        for round_no in range(args.rounds):
            for run_no, (label, path, port, server) in enumerate(runs):
                bodies = [
                    bodies_for(
                        round_no * 1000 + run_no * 100 + c, per_connection, flow_execution_ids
                    )
                    for c in range(args.concurrency)
                ]
                processes, backends = server_pids(server), database_backends(dsn, name)
                cpu_before = cpu_seconds(processes), cpu_seconds(backends)
                result = asyncio.run(run_round(port, path, key, bodies))
                count = per_connection * args.concurrency
                result["server_cpu_ms"] = 1000 * (cpu_seconds(processes) - cpu_before[0]) / count
                result["db_cpu_ms"] = 1000 * (cpu_seconds(backends) - cpu_before[1]) / count
                results[label].append(result)
        report(args, results)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    print(
        f"concurrency {args.concurrency}, {args.workers} uvicorn worker(s), "
        f"{args.requests // args.concurrency * args.concurrency} requests per round, "
        f"{args.rounds} rounds per endpoint (alternating), cpus={os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'round':>5} {'endpoint':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server CPU ms/req':>18} {'db CPU ms/req':>14}"
    )
    for round_no in range(args.rounds):
        for label, rounds in results.items():
            r = rounds[round_no]
            endpoint = ENDPOINT_NAMES.get(label, label)[:28]
            print(
                f"{round_no:>5} {endpoint:<28} {r['requests_per_s']:>8.0f} "
                f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['server_cpu_ms']:>18.2f} {r['db_cpu_ms']:>14.2f}"
            )
    bare = statistics.median(r["requests_per_s"] for r in results["bare"])
    for label, rounds in results.items():
        if label == "bare":
            continue
        rate = statistics.median(r["requests_per_s"] for r in rounds)
        p99 = max(r["p99_ms"] for r in rounds)
        cpu = statistics.median(r["server_cpu_ms"] + r["db_cpu_ms"] for r in rounds)
        print(
            f"{label}: {rate:.0f} req/s, {rate / bare:.2f} of bare (medians of rounds), "
            f"worst p99 {p99:.1f} ms, server + db CPU {cpu:.2f} ms/request"
        )
    print("target: >= 1000 POST/s with p99 < 50 ms")


if __name__ == "__main__":
    main()
