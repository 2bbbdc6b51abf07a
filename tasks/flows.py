"""Makes the workers of this app drive flows (the advance task and its listener)."""

from __future__ import annotations

from flowworker.flows.worker import register
from tasks.app import app

register(app)
