"""Default Celery settings for a flowworker worker; every value can be set from the
environment. `celery -A tasks worker` (or `flowworker worker`) with this file on the path
records every task with no code change."""

from __future__ import annotations

import os

# Loading this configuration is all it takes to record every task (publisher and worker).
import flowworker.autoinstall  # noqa: F401

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

broker_connection_retry_on_startup = True
# a worker fetches one message per process at a time: fair for long tasks, and a task a
# killed worker held goes back to the queue sooner
worker_prefetch_multiplier = 1

# flowworker's own settings are read from FLOWWORKER_* environment variables; setting
# flowworker_database_url etc. here would override them.
