"""Fixtures for the operations tests: real workers, the test's own broker queue."""

from __future__ import annotations

# The recording tests' fixture builds a world (queue, database, journal folder) per test module.
from tests.flowworker.recording.conftest import recording_factory

__all__ = ["recording_factory"]
