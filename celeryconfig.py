"""Default Celery settings for a flowworker worker; every value can be set from the
environment. `celery -A tasks worker` (or `flowworker worker`) with this file on the path
records every task with no code change."""

from __future__ import annotations

import os

broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = os.environ.get("CELERY_RESULT_BACKEND") or None

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Flower needs task events; the sent event lets it show queued tasks too.
worker_send_task_events = True
task_send_sent_event = True

flowworker_database_url = os.environ.get("FLOWWORKER_DATABASE_URL")
flowworker_redis_url = os.environ.get("FLOWWORKER_REDIS_URL")
flowworker_organization = os.environ.get("FLOWWORKER_ORGANIZATION")
