"""The Celery app `bench/worker_overhead.py` runs, in one of three modes (BENCH_MODE):

bare        plain Celery
floor       plain Celery (the bench runs `database_floor.py` beside it)
flowworker  Celery with flowworker.install(app)
sqlalchemy  Celery's own SQLAlchemy result backend on PostgreSQL (result_extended,
            task_track_started): the usual way to keep task history in SQL
"""

from __future__ import annotations

import os

import redis
from celery import Celery

MODE = os.environ.get("BENCH_MODE", "bare")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:done")

app = Celery("bench")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench"),
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_ignore_result=MODE != "sqlalchemy",
)
if MODE == "sqlalchemy":
    app.conf.update(
        result_backend="db+" + os.environ["BENCH_DATABASE_URL"],
        result_extended=True,
        task_track_started=True,
    )
elif MODE == "flowworker":
    import flowworker

    flowworker.install(app, database_url=os.environ["BENCH_DATABASE_URL"])

_redis = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.task(name="bench.noop")
def noop(n: int) -> int:
    # counting completions is the only work: the same in every mode
    _redis.incr(COUNTER)
    return n
