"""The `running` report waits `running_write_delay`: a short task is one report, its finished
one, and a long one shows as running once the delay is over, before it finishes."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

import flowworker
from flowworker import identity, signals
from flowworker.headers import PUBLISHED_AT
from flowworker.pending import PendingReport
from flowworker.plugin import Plugin
from flowworker.running import RunningTasks, Started
from persistence.database import create_database_engine
from persistence.reports import TaskReport
from persistence.schema import upgrade_database


def _started(request: Any, since: float = 0.0) -> Started:
    return Started("t", request, {"args": [1], "kwargs": {}}, dt.datetime.now(dt.UTC), since)


def test_a_task_that_finishes_in_time_takes_its_start_to_the_finished_report() -> None:
    written: list[Started] = []
    running = RunningTasks(0.2, written.append)
    request = SimpleNamespace(id="a")
    started = _started(request, since=100.0)
    running.started(started)
    running.write_overdue(now=100.1)
    assert written == []
    assert running.finished(request) is started
    running.write_overdue(now=200.0)
    assert written == [], "a finished task never gets a running report afterwards"


def test_a_task_still_running_when_due_gets_its_running_report_once() -> None:
    written: list[Started] = []
    running = RunningTasks(0.2, written.append)
    request, other = SimpleNamespace(id="a"), SimpleNamespace(id="b")
    started = _started(request, since=100.0)
    running.started(started)
    running.started(_started(other, since=100.15))
    running.write_overdue(now=100.25)
    assert written == [started], "only the one that has run for the delay"
    running.write_overdue(now=100.3)
    assert written == [started]
    assert running.finished(request) is None, "its finished report is written on its own"
    assert running.finished(SimpleNamespace(id="c")) is None


def test_a_task_that_never_finishes_is_forgotten_once_its_running_report_is_written() -> None:
    # Celery sends no finished signal for a task that raises Ignore or Reject
    written: list[Started] = []
    running = RunningTasks(0.2, written.append)
    for n in range(5):
        running.started(_started(SimpleNamespace(id=str(n)), since=100.0))
    running.write_overdue(now=100.3)
    assert len(written) == 5
    assert running._started == {}, "nothing is kept for tasks that are over"


def test_a_running_report_that_cannot_be_written_leaves_the_start_to_the_finished_one() -> None:
    attempts: list[Started] = []

    def failing(started: Started) -> None:
        attempts.append(started)
        raise RuntimeError("the journal is full")

    running = RunningTasks(0.2, failing)
    request, other = SimpleNamespace(id="a"), SimpleNamespace(id="b")
    started = _started(request, since=100.0)
    running.started(started)
    running.started(_started(other, since=100.0))
    running.write_overdue(now=100.3)
    running.write_overdue(now=100.6)
    assert len(attempts) == 2, "each tried once, the second despite the first's failure"
    assert running.finished(request) is started


def test_the_finished_report_waits_while_the_running_one_is_being_written() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_write(started: Started) -> None:
        entered.set()
        release.wait(5)

    running = RunningTasks(0.2, slow_write)
    request = SimpleNamespace(id="a")
    running.started(_started(request, since=100.0))
    writer = threading.Thread(target=running.write_overdue, kwargs={"now": 101.0})
    writer.start()
    assert entered.wait(5)
    finished: list[Started | None] = []
    finisher = threading.Thread(target=lambda: finished.append(running.finished(request)))
    finisher.start()
    finisher.join(0.2)
    assert finisher.is_alive(), "the finished report must not overtake the running one"
    release.set()
    writer.join(5)
    finisher.join(5)
    assert finished == [None]


# -- through Celery's signals: the lines a task process journals ----------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    app = Celery("running", broker="memory://")
    app.conf.task_ignore_result = True

    @app.task(name="running.sleep", shared=False)
    def sleep(seconds: float, password: str = "") -> float:
        time.sleep(seconds)
        return seconds

    yield app
    flowworker.uninstall()


def _install(app: Celery, spool: Path, delay: float) -> Plugin:
    url = f"sqlite:///{spool.parent / 'flowworker.db'}"
    upgrade_database(create_database_engine(url))
    plugin = flowworker.install(app, database_url=url, spool_dir=spool, running_write_delay=delay)
    plugin.recorder.tailed = True  # as in a worker's pool: every report goes to the journal
    return plugin


def _run(app: Celery, plugin: Plugin, seconds: float, clock_ahead: float = 0.0) -> str:
    task_id = str(uuid.uuid4())
    headers = {"id": task_id, "task": "running.sleep", "root_id": task_id}
    identity.assign_at_publish(plugin, headers)
    identity_headers = {name: value for name, value in headers.items() if "flowworker" in name}
    identity_headers[PUBLISHED_AT] += clock_ahead  # the publisher's clock
    app.tasks["running.sleep"].apply(
        args=(seconds,), kwargs={"password": "hunter2"}, task_id=task_id, headers=identity_headers
    )
    return task_id


def _time(line: dict[str, Any], name: str) -> dt.datetime:
    return dt.datetime.fromisoformat(line[name])


def _lines(spool: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(spool.glob("*.journal.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_a_short_task_journals_one_report_that_says_when_it_started(
    app: Celery, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    plugin = _install(app, spool, delay=0.5)
    task_id = _run(app, plugin, 0.0)
    [line] = _lines(spool)
    assert (line["celery_task_id"], line["status"], line["reports"]) == (task_id, "completed", 2)
    assert line["input"] == {"args": [0.0], "kwargs": {"password": "***"}}
    assert line["output"] == 0.0
    queued, started, finished = (_time(line, name) for name in ("queued_at", "started_at", "at"))
    assert queued <= started <= finished
    assert plugin.recorder.stats.recorded == 2


def test_a_long_task_journals_running_once_it_is_due_then_its_finished_report(
    app: Celery, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    plugin = _install(app, spool, delay=0.1)
    started = time.time()
    task_id = _run(app, plugin, 0.6)
    running, finished = _lines(spool)
    assert (running["celery_task_id"], running["status"]) == (task_id, "running")
    assert (finished["celery_task_id"], finished["status"]) == (task_id, "completed")
    assert running["input"] == {"args": [0.6], "kwargs": {"password": "***"}}
    # it says when the task started, not when it was written
    assert dt.datetime.fromisoformat(running["at"]).timestamp() == pytest.approx(started, abs=0.1)
    assert (finished["started_at"], finished["input"], finished["reports"]) == (None, None, 1)


def test_with_no_delay_running_is_journaled_as_the_task_starts(app: Celery, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    plugin = _install(app, spool, delay=0)
    _run(app, plugin, 0.0)
    assert [line["status"] for line in _lines(spool)] == ["running", "completed"]


def test_a_line_made_straight_from_the_request_reads_as_one_made_from_the_report(
    app: Celery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    plugin = _install(app, spool, delay=0.5)
    reports_made: list[TaskReport] = []
    make_report = signals._report

    def counted(*args: Any, **kwargs: Any) -> TaskReport:
        reports_made.append(make_report(*args, **kwargs))
        return reports_made[-1]

    monkeypatch.setattr(signals, "_report", counted)
    _run(app, plugin, 0.0)  # straight from the request: `signals._journal_finished`
    assert reports_made == []
    plugin.add_terminal_listener(lambda item: None)  # a listener needs the report objects
    _run(app, plugin, 0.0)
    assert len(reports_made) == 1
    straight, general = (PendingReport.from_line(json.dumps(line)) for line in _lines(spool))

    def comparable(item: PendingReport) -> tuple[Any, ...]:
        report = item.report
        assert item.ad_hoc is not None
        assert item.ad_hoc.celery_root_id == report.celery_task_id
        assert report.queued_at is not None
        assert report.started_at is not None
        assert report.queued_at <= report.started_at <= report.at
        unique = {"flow_execution_id": None, "celery_task_id": None, "at": None}
        timeless = replace(report, queued_at=None, started_at=None)
        return (
            {**vars_of(timeless), **unique},
            item.organization_id,
            item.ad_hoc.organization_id,
            item.reports,
            item.hold,
        )

    assert comparable(straight) == comparable(general)


def vars_of(report: TaskReport) -> dict[str, Any]:
    return {field.name: getattr(report, field.name) for field in fields(report)}


def test_a_replaced_plugin_stops_its_watch(app: Celery, tmp_path: Path) -> None:
    def watches() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "flowworker-running"]

    before = len(watches())
    plugin = _install(app, tmp_path / "spool", delay=0.02)
    _run(app, plugin, 0.0)
    assert len(watches()) == before + 1
    replacement = _install(app, tmp_path / "spool", delay=0.02)
    _run(app, replacement, 0.0)
    deadline = time.monotonic() + 5
    while len(watches()) > before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(watches()) == before + 1, "one watch: the replacement's"


@pytest.mark.parametrize("listener", [False, True], ids=["straight", "general"])
def test_a_publisher_clock_ahead_never_puts_queued_after_the_start(
    app: Celery, tmp_path: Path, listener: bool
) -> None:
    spool = tmp_path / "spool"
    plugin = _install(app, spool, delay=0.5)
    if listener:  # the general way: report objects for a terminal listener
        plugin.add_terminal_listener(lambda item: None)
    _run(app, plugin, 0.0, clock_ahead=60.0)
    [line] = _lines(spool)
    queued, started, finished = (_time(line, name) for name in ("queued_at", "started_at", "at"))
    assert queued <= started <= finished
