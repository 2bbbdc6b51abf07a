"""Templates keep a whole value's type, format embedded ones, and say what is missing."""

from __future__ import annotations

import pytest

from flowworker.flows import TemplateError
from flowworker.flows.templates import Context, parse_reference, render

CONTEXT = Context(
    outputs={"extract": {"rows": [{"name": "ann", "age": 31}, {"name": "bob"}]}, "n": 2},
    inputs={"city": "Oslo"},
    item={"name": "cy"},
)


def test_whole_templates_keep_the_type_and_paths_walk_lists_and_dicts() -> None:
    assert render("{{extract.output.rows}}", CONTEXT) == CONTEXT.outputs["extract"]["rows"]
    assert render("{{ extract.output.rows.0.age }}", CONTEXT) == 31
    assert render("{{n.output}}", CONTEXT) == 2
    assert render({"a": ["{{inputs.city}}", "{{item.name}}"]}, CONTEXT) == {"a": ["Oslo", "cy"]}


def test_embedded_templates_are_formatted_into_the_string() -> None:
    assert render("{{n.output}} rows from {{inputs.city}}", CONTEXT) == "2 rows from Oslo"
    assert render("first: {{extract.output.rows.1}}", CONTEXT) == 'first: {"name": "bob"}'


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{extract.output.rows.5}}", "'5' is not an index of a list of 2 item(s)"),
        ("{{extract.output.total}}", "has no key 'total' (keys: rows)"),
        ("{{n.output.x}}", "cannot take 'x' of a int"),
        ("{{later.output}}", "task 'later' has no output yet"),
        ("{{inputs.country}}", "the flow has no input 'country'"),
    ],
)
def test_unresolvable_templates_say_why(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(template, CONTEXT)


def test_item_outside_a_loop_is_an_error() -> None:
    with pytest.raises(TemplateError, match="only defined in a task that has a loop"):
        render("{{item}}", Context())


def test_references_are_parsed() -> None:
    reference = parse_reference(" a-task.output.rows.0 ")
    assert (reference.kind, reference.name, reference.path) == ("task", "a-task", ("rows", "0"))
    assert parse_reference("inputs.x.y").path == ("y",)
    with pytest.raises(TemplateError):
        parse_reference("extract.result")
