from __future__ import annotations

from pathlib import Path

import pytest

from flowworker.config import Settings
from persistence.errors import ConfigurationError


def test_celery_config_wins_over_the_environment_and_explicit_wins_over_both() -> None:
    environ = {"FLOWWORKER_ORGANIZATION": "from-env", "FLOWWORKER_REDIS_URL": "redis://env"}
    conf = {"flowworker_organization": "from-celery"}
    settings = Settings.load(conf, environ)
    assert settings.organization == "from-celery"
    assert settings.redis_url == "redis://env"
    assert Settings.load(conf, environ, organization="explicit").organization == "explicit"


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("ON", True)])
def test_journal_fsync_reads_the_usual_spellings(raw: str, expected: bool) -> None:
    assert Settings.load({}, {"FLOWWORKER_JOURNAL_FSYNC": raw}).journal_fsync is expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("FLOWWORKER_JOURNAL_FSYNC", "maybe", "true or false"),
        ("FLOWWORKER_JSON_MAX_BYTES", "lots", "whole number"),
        ("FLOWWORKER_JSON_MAX_BYTES", "10", "at least 1024"),
        ("FLOWWORKER_WRITER_NICE", "20", "from 0 to 19"),
        ("FLOWWORKER_WRITER_NICE", "low", "from 0 to 19"),
        ("FLOWWORKER_QUEUED_WRITE_DELAY", "soon", "seconds from 0 to 3600"),
        ("FLOWWORKER_QUEUED_WRITE_DELAY", "-1", "seconds from 0 to 3600"),
        ("FLOWWORKER_QUEUED_WRITE_DELAY", "nan", "seconds from 0 to 3600"),
    ],
)
def test_bad_settings_say_what_was_wrong(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.load({}, {name: raw})


def test_spool_dir_expands_the_home_directory() -> None:
    settings = Settings.load({}, {"FLOWWORKER_SPOOL_DIR": "~/journals"})
    assert settings.spool_dir == Path.home() / "journals"


def test_writer_nice_defaults_to_19_and_reads_the_environment() -> None:
    assert Settings.load({}, {}).writer_nice == 19
    assert Settings.load({}, {"FLOWWORKER_WRITER_NICE": "0"}).writer_nice == 0


def test_queued_write_delay_defaults_to_5_seconds_and_reads_the_environment() -> None:
    assert Settings.load({}, {}).queued_write_delay == 5.0
    assert Settings.load({}, {"FLOWWORKER_QUEUED_WRITE_DELAY": "0.25"}).queued_write_delay == 0.25
    assert Settings.load({"flowworker_queued_write_delay": 0}, {}).queued_write_delay == 0


def test_writer_is_process_or_thread() -> None:
    assert Settings.load({}, {}).writer == "process"
    assert Settings.load({}, {"FLOWWORKER_WRITER": " Thread "}).writer == "thread"
    with pytest.raises(ConfigurationError, match="process or thread"):
        Settings.load({}, {"FLOWWORKER_WRITER": "fork"})
