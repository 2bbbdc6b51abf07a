"""Built-in and example Celery tasks for flows and the demo (the plugin never imports this)."""

from __future__ import annotations

from tasks.app import app

__all__ = ["app"]
