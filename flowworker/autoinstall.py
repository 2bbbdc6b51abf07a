"""Importing this module records every task, with settings from the environment.

Our `celeryconfig.py` imports it, so a Celery app configured with
`app.config_from_object("celeryconfig")` records every task with no code change.
"""

from __future__ import annotations

from flowworker.install import install
from flowworker.plugin import active_plugin

if active_plugin() is None:
    install()
