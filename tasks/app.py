"""The Celery app behind `flowworker worker` and the demo: our celeryconfig, our tasks."""

from __future__ import annotations

from celery import Celery

# Modules holding built-in tasks; each registers its tasks on `app` when imported.
TASK_MODULES: list[str] = [
    "tasks.files",
    "tasks.records",
    "tasks.web",
    "tasks.timing",
    "tasks.flows",
]

app = Celery("flowworker", include=TASK_MODULES)
app.config_from_object("celeryconfig")
