"""The HTTP API (FastAPI): the spec's task-execution endpoints and a live WebSocket.

Run it with `flowworker serve`; see docs/http-api.md.
"""

from flowworker.api.app import ApiOptions, create_app, create_app_from_environment

__all__ = ["ApiOptions", "create_app", "create_app_from_environment"]
