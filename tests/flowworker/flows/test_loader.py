"""Loading a flow file reports every problem at once, each with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowworker.flows import FlowValidationError, load_flow, parse_flow

ROOT = Path(__file__).resolve().parents[3]

GOOD = """\
name: etl
version: 2
inputs:
  source: data.json
  limit: null
tasks:
  - name: extract
    task: tasks.read_json
    input: {path: "{{inputs.source}}"}
  - name: clean
    task: tasks.filter_records
    input: {records: "{{extract.output.rows}}", where: "age >= 18"}
    retry: {max_retries: 2, delay: 0.5}
  - name: each
    task: tasks.echo
    loop: "{{clean.output}}"
    input: {value: "{{item.name}}"}
  - name: report
    task: tasks.echo
    depends_on: [each, extract]
    input: {value: "total {{clean.output.0}}"}
"""


def problems_of(text: str, registered: set[str] | None = None) -> list[tuple[int, str]]:
    with pytest.raises(FlowValidationError) as caught:
        parse_flow(text, "flow.yaml", None if registered is None else registered.__contains__)
    return [(p.line, p.message) for p in caught.value.problems]


def test_a_good_flow_loads_with_implied_and_explicit_dependencies() -> None:
    flow = parse_flow(GOOD)
    assert flow.name == "etl"
    assert flow.version == "2"
    assert flow.inputs == {"source": "data.json", "limit": None}
    assert flow.task("clean").depends_on == ("extract",)
    assert flow.task("each").depends_on == ("clean",)
    assert flow.task("report").depends_on == ("each", "extract", "clean")
    assert flow.task("clean").retry.max_retries == 2
    assert flow.task("clean").retry.delay == 0.5
    assert flow.task("each").loop == "{{clean.output}}"
    assert flow.task("clean").line == 10


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    text = """\
name: broken
version: "1"
tasks:
  - name: a
    task: tasks.echo
    input: {value: "{{ghost.output}}"}
  - name: b
    task: tasks.not_registered
    depends_on: [nowhere]
  - name: a
    task: tasks.echo
  - name: c
    task: tasks.echo
    input: {value: "{{d.output}}"}
  - name: d
    task: tasks.echo
    input: {value: "{{c.output}}", other: "{{inputs.missing}}", x: "{{item}}"}
  - name: ""
    task: tasks.echo
  - name: e
    task: tasks.echo
    retry: {max_retries: -1, delay: "soon", backoff: 2}
    loop: 42
  - name: f
    task: tasks.echo
    input: {value: "{{nonsense}}"}
"""
    problems = problems_of(text, registered={"tasks.echo"})
    lines = dict.fromkeys(line for line, _ in problems)
    assert list(lines) == [6, 8, 9, 10, 12, 17, 18, 22, 23, 26]
    text_of = {line: [m for n, m in problems if n == line] for line in lines}
    assert "names no task of this flow ('ghost')" in text_of[6][0]
    assert "Celery task 'tasks.not_registered' is not registered" in text_of[8][0]
    assert "unknown task 'nowhere'" in text_of[9][0]
    assert "duplicate task name 'a' (first on line 4)" in text_of[10][0]
    assert text_of[12] == ["dependency cycle: c -> d -> c"]
    assert any("input 'missing'" in m for m in text_of[17])
    assert any("only the input of a task with a 'loop' may use item" in m for m in text_of[17])
    assert "1 to 200 characters" in text_of[18][0]
    assert any("unknown key 'backoff'" in m for m in text_of[22])
    assert any("'max_retries' must be a whole number" in m for m in text_of[22])
    assert any("'delay' must be a number" in m for m in text_of[22])
    assert "'loop' must be a list or one template" in text_of[23][0]
    assert "is not TASK.output[.path], inputs.NAME or item" in text_of[26][0]


def test_a_task_name_of_201_characters_is_refused() -> None:
    long_name = "t" * 201
    text = f"name: n\nversion: '1'\ntasks:\n  - name: {long_name}\n    task: tasks.echo\n"
    assert problems_of(text) == [
        (4, "task #1's 'name' must be a string of 1 to 200 characters (got 201)")
    ]
    ok = text.replace(long_name, "t" * 200)
    assert parse_flow(ok).task_names == ("t" * 200,)


def test_top_level_problems_and_bad_yaml() -> None:
    assert problems_of("tasks: []\ncolour: blue\n") == sorted(
        [
            (1, "the flow has no 'name'"),
            (1, "the flow has no 'version'"),
            (1, "'tasks' must be a non-empty list of tasks"),
            (
                2,
                "unknown key 'colour' in the flow "
                "(allowed: description, inputs, name, tasks, version)",
            ),
        ]
    )
    [(line, message)] = problems_of("name: x\ntasks: [\n")
    assert line == 3
    assert message.startswith("not valid YAML")
    assert problems_of("") == [(1, "the file is empty; a flow needs a name, version and tasks")]


def test_the_error_message_lists_file_and_lines() -> None:
    with pytest.raises(FlowValidationError) as caught:
        parse_flow("name: x\nversion: 1\ntasks:\n  - name: a\n", "my.yaml")
    assert str(caught.value) == "my.yaml has 1 problem:\n  my.yaml:line 4: task #1 has no 'task'"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_load_against_the_tasks_app(path: Path) -> None:
    from tasks.app import app

    app.loader.import_default_modules()
    flow = load_flow(path, app.tasks.__contains__)
    assert flow.tasks
