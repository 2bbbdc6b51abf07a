"""`flowworker run`, `rerun` and `cancel` as a person uses them: exit codes and messages.

Each command runs in a subprocess with an in-process broker and worker (`--with-worker`,
CELERY_BROKER_URL=memory://) and a SQLite file of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

GOOD = """
name: cli-good
version: "1"
inputs: {who: world}
tasks:
  - name: hello
    task: tasks.format_text
    input: {template: "hello {who}", values: {who: "{{inputs.who}}"}}
  - name: shout
    task: tasks.echo
    input: {value: "{{hello.output}}!"}
"""

FAILING = """
name: cli-failing
version: "1"
tasks:
  - name: boom
    task: tasks.fail_times
    input: {failures: 3}
    retry: {max_retries: 1}
  - name: never
    task: tasks.echo
    input: {value: "{{boom.output}}"}
"""


@pytest.fixture
def flowworker(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path / "home"),
        "CELERY_BROKER_URL": "memory://",
        "FLOWWORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "COLUMNS": "160",
    }
    env.pop("FLOWWORKER_REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "flowworker", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowworker", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def test_run_rerun_and_cancel(flowworker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "good.yaml").write_text(GOOD)
    done = flowworker("run", "good.yaml", "--input", '{"who": "ann"}', "--with-worker")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"flow execution \S+ completed", done.stdout)
    flow_execution_id = re.search(r"flow execution (\S+) of cli-good", done.stdout)[1]  # type: ignore[index]

    dry = flowworker("rerun", flow_execution_id, "--from", "hello", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would run again: hello, shout" in dry.stdout
    assert "would become stale: hello[0], shout[0]" in dry.stdout

    again = flowworker("rerun", flow_execution_id, "--from", "shout", "--with-worker")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "now stale: shout[0]" in again.stdout

    ended = flowworker("cancel", flow_execution_id)
    assert ended.returncode == 0
    assert "had already ended: completed" in ended.stdout


def test_a_failing_flow_exits_1(flowworker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "failing.yaml").write_text(FAILING)
    failed = flowworker("run", "failing.yaml", "--with-worker")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert re.search(r"flow execution \S+ failed", failed.stdout)
    assert "(failed: boom)" in failed.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "{not json"], "Invalid value for --input: not valid JSON"),
        (["--input", "[1]"], "must be a JSON object"),
        (["--input", '{"whom": 1}'], "has no input(s) 'whom' (declared: who)"),
    ],
)
def test_bad_input_exits_2(flowworker, tmp_path: Path, arguments: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "good.yaml").write_text(GOOD)
    outcome = flowworker("run", "good.yaml", *arguments)
    assert outcome.returncode == 2, outcome.stdout + outcome.stderr
    assert message in outcome.stderr


def test_a_flow_file_with_problems_exits_1_listing_them(flowworker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.yaml").write_text(GOOD.replace("{{hello.output}}", "{{helo.output}}"))
    outcome = flowworker("run", "bad.yaml")
    assert outcome.returncode == 1
    assert "bad.yaml:line 11: template {{helo.output}} names no task of this flow" in outcome.stderr
