"""The `executions` and `flow-executions` commands, through the real entry point `main`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from flowworker.cli import main
from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization
from persistence.reports import TaskReport
from persistence.status import ExecutionStatus as S
from persistence.upsert import upsert_task_executions

BOOM = {"message": "disk full", "type": "OSError", "traceback": "..."}


@dataclass
class Recorded:
    url: str
    flow_execution_id: uuid.UUID
    failed_id: uuid.UUID
    completed_id: uuid.UUID


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def recorded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """'acme' has one flow execution: extract failed, then its retry completed; load failed.
    'globex' has one execution too, that acme must never see."""
    monkeypatch.setenv("COLUMNS", "200")  # rich: wide enough that ids are not folded
    for name in ("FLOWWORKER_FLOWER_URL", "FLOWWORKER_DATABASE_URL", "FLOWWORKER_ORGANIZATION"):
        monkeypatch.delenv(name, raising=False)
    with transaction(engine) as connection:
        acme = ensure_organization(connection, "acme")
        globex = ensure_organization(connection, "globex")
        flow_execution_id = create_flow_execution(connection, acme)
        globex_flow = create_flow_execution(connection, globex)
    with transaction(engine, acme) as connection:
        failed, _, completed, _ = upsert_task_executions(
            connection,
            [
                TaskReport(flow_execution_id, "extract", 0, S.RUNNING, celery_task_id="cel-0"),
                TaskReport(flow_execution_id, "extract", 0, S.FAILED, error=BOOM),
                TaskReport(flow_execution_id, "extract", 1, S.COMPLETED, output={"rows": 3}),
                TaskReport(
                    flow_execution_id,
                    "load",
                    0,
                    S.FAILED,
                    error={"message": "quota exceeded", "type": "IOError"},
                    celery_task_id="cel-9",
                ),
            ],
        )
    with transaction(engine, globex) as connection:
        upsert_task_executions(connection, [TaskReport(globex_flow, "secret", 0, S.QUEUED)])
    return Recorded(
        url=engine.url.render_as_string(hide_password=False),
        flow_execution_id=flow_execution_id,
        failed_id=failed.task_execution_id,
        completed_id=completed.task_execution_id,
    )


def run(capsys: pytest.CaptureFixture[str], recorded: Recorded, *args: str) -> Outcome:
    argv = [*args, "--database-url", recorded.url]
    if "--org" not in args:
        argv += ["--org", "acme"]
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:
        code = 0
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def test_list_prints_a_table(capsys: pytest.CaptureFixture[str], recorded: Recorded) -> None:
    outcome = run(capsys, recorded, "executions", "list")
    assert outcome.exit_code == 0, outcome.stderr
    assert "3 task execution(s)" in outcome.stdout
    assert str(recorded.failed_id) in outcome.stdout
    assert str(recorded.flow_execution_id) in outcome.stdout
    assert "completed" in outcome.stdout
    assert "secret" not in outcome.stdout  # globex's


def test_list_json_is_one_document_with_the_spec_fields(
    capsys: pytest.CaptureFixture[str], recorded: Recorded
) -> None:
    outcome = run(capsys, recorded, "executions", "list", "--json", "--oldest-first")
    assert outcome.exit_code == 0, outcome.stderr
    document = json.loads(outcome.stdout)
    assert document["next_cursor"] is None
    # one statement wrote them all: same created_at, so the id decides their order
    assert sorted((i["task_name"], i["task_execution_idx"]) for i in document["items"]) == [
        ("extract", 0),
        ("extract", 1),
        ("load", 0),
    ]
    assert [i["id"] for i in document["items"]] == sorted(i["id"] for i in document["items"])
    (first,) = (i for i in document["items"] if i["id"] == str(recorded.failed_id))
    assert first["id"] == str(recorded.failed_id)
    assert first["status"] == "failed"
    assert first["error"] == BOOM
    assert first["celery_task_id"] == "cel-0"
    assert set(first) >= {"organization_id", "modified_by", "created_at", "updated_at", "version"}


def test_list_pages_with_the_cursor(capsys: pytest.CaptureFixture[str], recorded: Recorded) -> None:
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(5):  # 3 records, pages of 2: two pages
        outcome = run(capsys, recorded, "executions", "list", "--json", "--limit", "2", *cursor)
        assert outcome.exit_code == 0, outcome.stderr
        document = json.loads(outcome.stdout)
        seen += [item["id"] for item in document["items"]]
        if document["next_cursor"] is None:
            break
        cursor = ["--cursor", document["next_cursor"]]
    assert len(seen) == len(set(seen)) == 3
    table = run(capsys, recorded, "executions", "list", "--limit", "1")
    assert "more: --cursor " in table.stdout


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--status", "failed"], {"extract:0", "load:0"}),
        (["--status", "completed,cancelled"], {"extract:1"}),
        (["--status", "queued", "--status", "completed"], {"extract:1"}),
        (["--task", "load"], {"load:0"}),
        (["--celery-task-id", "cel-9"], {"load:0"}),
        (["--created-after", "1h"], {"extract:0", "extract:1", "load:0"}),
        (["--created-before", "2000-01-01"], set()),
        (
            ["--updated-after", "2000-01-01T00:00:00+00:00", "--task", "extract"],
            {"extract:0", "extract:1"},
        ),
        (["--updated-before", "30m"], set()),
        (["--flow-execution", str(uuid.UUID(int=1))], set()),
    ],
)
def test_list_filters(
    capsys: pytest.CaptureFixture[str],
    recorded: Recorded,
    filters: list[str],
    expected: set[str],
) -> None:
    outcome = run(capsys, recorded, "executions", "list", "--json", *filters)
    assert outcome.exit_code == 0, outcome.stderr
    items = json.loads(outcome.stdout)["items"]
    assert {f"{i['task_name']}:{i['task_execution_idx']}" for i in items} == expected


def test_show_prints_the_record_and_its_history(
    capsys: pytest.CaptureFixture[str], recorded: Recorded
) -> None:
    outcome = run(capsys, recorded, "executions", "show", str(recorded.failed_id))
    assert outcome.exit_code == 0, outcome.stderr
    assert "disk full" in outcome.stdout
    assert "status history" in outcome.stdout
    as_json = run(capsys, recorded, "executions", "show", str(recorded.failed_id), "--json")
    document = json.loads(as_json.stdout)
    assert document["id"] == str(recorded.failed_id)
    assert [(c["from_status"], c["to_status"]) for c in document["status_history"]] == [
        (None, "running"),
        ("running", "failed"),
    ]


def test_flow_execution_shows_tasks_failures_and_flower_links(
    capsys: pytest.CaptureFixture[str], recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_execution_id = str(recorded.flow_execution_id)
    outcome = run(capsys, recorded, "flow-executions", "show", flow_execution_id)
    assert outcome.exit_code == 0, outcome.stderr
    assert "failed attempts" in outcome.stdout
    assert "OSError: disk full" in outcome.stdout
    assert "IOError: quota exceeded" in outcome.stdout
    assert "failed tasks     load" in outcome.stdout  # extract's retry completed
    assert "/task/" not in outcome.stdout
    monkeypatch.setenv("FLOWWORKER_FLOWER_URL", "http://flower.example:5555/")
    linked = run(capsys, recorded, "flow-executions", "show", flow_execution_id)
    assert "http://flower.example:5555/task/cel-0" in linked.stdout
    assert "http://flower.example:5555/task/cel-9" in linked.stdout
    as_json = json.loads(
        run(capsys, recorded, "flow-executions", "show", flow_execution_id, "--json").stdout
    )
    assert as_json["id"] == flow_execution_id
    assert as_json["summary"]["counts_by_status"] == {"completed": 1, "failed": 2}
    assert len(as_json["task_executions"]) == 3


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["executions", "show", str(uuid.UUID(int=7))], 1, f"no task execution {uuid.UUID(int=7)}"),
        (["flow-executions", "show", str(uuid.UUID(int=7))], 1, "no flow execution"),
        (["executions", "show", "not-an-id"], 2, "'not-an-id' is not a UUID"),
        (["executions", "list", "--status", "finished"], 2, "invalid status 'finished'"),
        (["executions", "list", "--created-after", "yesterday"], 2, "'yesterday' is neither"),
        (["executions", "list", "--cursor", "garbage"], 2, "malformed cursor 'garbage'"),
        (["executions", "list", "--limit", "0"], 2, "--limit"),
        (
            ["executions", "list", "--created-after", "1h", "--created-before", "2h"],
            2,
            "created_after",
        ),
        (["executions", "list", "--org", "initech"], 1, "no organization named 'initech'"),
    ],
)
def test_exit_codes_and_messages(
    capsys: pytest.CaptureFixture[str],
    recorded: Recorded,
    args: list[str],
    exit_code: int,
    message: str,
) -> None:
    outcome = run(capsys, recorded, *args)
    assert outcome.exit_code == exit_code
    assert message in outcome.stderr
    assert outcome.stdout == ""


def test_the_installed_command_prints_pure_json_and_fails_cleanly(recorded: Recorded) -> None:
    command = [sys.executable, "-c", "from flowworker.cli import main; main()"]
    listed = subprocess.run(
        [*command, "executions", "list", "--json", "--database-url", recorded.url, "--org", "acme"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["items"]) == 3
    unreachable = subprocess.run(
        [*command, "executions", "list", "--database-url", "postgresql://nobody@127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 1
    assert "cannot reach the database" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
