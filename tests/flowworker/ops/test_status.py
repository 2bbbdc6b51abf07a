"""`flowworker status` and the `flowworker_stats` remote-control command, with real workers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from flowworker.cli import cli
from flowworker.control import COMMAND, STATS_INTERVAL
from tests.flowworker.celery_app import add
from tests.flowworker.recording.conftest import Recording
from tests.flowworker.workers import wait_until
from tests.pg_cluster import free_port

APP = "tests.flowworker.celery_app:app"


@pytest.fixture(scope="module")
def recording(recording_factory: Any) -> Recording:
    recording: Recording = recording_factory()
    recording.start_worker(concurrency=2, name="stats")
    return recording


def _stats(recording: Recording) -> dict[str, Any]:
    replies = recording.app.control.broadcast(COMMAND, reply=True, timeout=3.0) or []
    # other suites' workers may share the broker: read this module's worker's answer only
    mine = {host: reply for answer in replies for host, reply in answer.items()}
    reply: dict[str, Any] = mine[recording.workers[0].hostname]
    return reply


def test_each_process_reports_what_it_recorded_and_the_writer_what_it_wrote(
    recording: Recording,
) -> None:
    results = [add.delay(n, n) for n in range(20)]
    for result in results:
        recording.wait_for(1, {"completed"}, celery_task_id=result.id)

    def written_by_the_writer() -> dict[str, Any] | None:
        stats = _stats(recording)
        # each task is running (saying when it was queued) + completed: two reports, which
        # the children journal as one (a short task's `running` waits, then folds into the
        # finished report) and the writer process writes as one row write, counted as two
        processes = stats["processes"]
        recorded = sum(p["recorded"] for p in processes if p["role"] == "child")
        return stats if recorded >= 40 and sum(p["written"] for p in processes) >= 40 else None

    stats: Any = wait_until(written_by_the_writer, timeout=4 * STATS_INTERVAL)
    by_role = {
        role: [p for p in stats["processes"] if p["role"] == role] for role in ("child", "writer")
    }
    assert sum(p["recorded"] for p in by_role["child"]) == 40
    assert [p["written"] for p in by_role["writer"]] == [40]
    assert stats["installed"] is True
    assert stats["pool_processes"] == 2
    assert len(by_role["child"]) == 2
    assert stats["missing"] == []
    assert stats["totals"]["journal_lines"] == 0
    assert stats["totals"]["lost"] == 0
    assert stats["totals"]["rejected"] == 0
    assert stats["last_write_at"] is not None


def test_status_reports_database_journals_and_workers(recording: Recording) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "status",
            "--json",
            "--app",
            APP,
            "--database-url",
            recording.env["FLOWWORKER_DATABASE_URL"],
        ],
        env={"FLOWWORKER_SPOOL_DIR": recording.env["FLOWWORKER_SPOOL_DIR"]},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    database = document["database"]
    assert database["reachable"] is True
    assert database["schema_revision"] == database["schema_head"]
    assert database["last_write_at"] is not None
    assert document["journal"]["waiting"] == 0
    assert document["broker"]["reachable"] is True
    workers = document["broker"]["workers"]
    assert any(host.startswith("stats-") and "totals" in info for host, info in workers.items())

    text = CliRunner().invoke(
        cli,
        ["status", "--app", APP, "--database-url", recording.env["FLOWWORKER_DATABASE_URL"]],
    )
    assert text.exit_code == 0, text.output
    assert "worker(s) answered" in text.output


def test_status_exits_non_zero_when_the_database_is_unreachable(recording: Recording) -> None:
    nowhere = f"postgresql+psycopg://root@127.0.0.1:{free_port()}/nothing"
    result = CliRunner().invoke(cli, ["status", "--json", "--app", APP, "--database-url", nowhere])
    assert result.exit_code == 1, result.output
    document = json.loads(result.output)
    assert document["database"]["reachable"] is False
    assert "connection" in document["database"]["error"].lower()
    assert document["broker"]["reachable"] is True, "the other checks still run"
