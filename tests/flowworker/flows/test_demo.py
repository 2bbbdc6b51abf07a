"""`flowworker demo` on a fresh checkout with no servers: SQLite, in-process broker and worker."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVER_SETTINGS = ("FLOWWORKER_DATABASE_URL", "CELERY_BROKER_URL", "FLOWWORKER_REDIS_URL")


def test_demo_runs_with_no_servers(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in SERVER_SETTINGS}
    env.update(
        PYTHONPATH=str(ROOT),
        HOME=str(tmp_path / "home"),  # no journal or settings of a previous run
        COLUMNS="160",
    )
    completed = subprocess.run(
        [sys.executable, "-m", "flowworker", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr
    assert "in-process (memory://)" in output
    assert "completed" in output
    assert "recorded history: one row per execution" in output
    database = tmp_path / "flowworker.db"
    assert f"SQLite file {database}" in output
    assert str(tmp_path / "flowworker-demo-output.json") in output

    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT task_name, task_execution_idx, attempt, status FROM task_executions"
            " ORDER BY task_name, task_execution_idx"
        ).fetchall()
        flow_status = connection.execute("SELECT status FROM flow_executions").fetchall()
    assert flow_status == [("completed",)]
    assert rows == [
        ("adults", 0, 0, "completed"),
        ("directory", 0, 0, "completed"),
        ("extract", 0, 0, "completed"),
        ("greet", 0, 0, "completed"),
        ("greet", 1, 0, "completed"),
        ("greet", 2, 0, "completed"),
        ("load", 0, 0, "failed"),
        ("load", 1, 1, "completed"),
        ("save", 0, 0, "completed"),
    ]
    for task, idx in [("greet", 2), ("load", 0), ("load", 1)]:
        assert any(
            line.split()[:2] == [task, str(idx)] for line in output.splitlines() if line.strip()
        ), f"{task}[{idx}] is not in the printed table"
