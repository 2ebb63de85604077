"""backends.constraints: one typed constraint from response_format or structured_outputs."""

from __future__ import annotations

import json

import pytest

from backends.constraints import Constraint, constraint_field, constraint_of
from backends.errors import UnsupportedParameter


def test_a_choice_is_a_regex_of_its_escaped_options() -> None:
    found = constraint_of({"structured_outputs": {"choice": ["vui", "b.c"]}})
    assert found == Constraint("regex", r"(vui|b\.c)", "structured_outputs")


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"mood": {"enum": ["vui"]}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "m", "schema": schema}}
    found = constraint_of({"response_format": wrapped})
    assert found is not None
    assert (found.kind, json.loads(found.text)) == ("json_schema", schema)  # the inner schema
    assert constraint_of({"response_format": {"type": "json_object"}}) == Constraint(
        "json_object", "", "response_format"
    )
    assert constraint_of({"response_format": {"type": "text"}}) is None
    assert constraint_of({}) is None


def test_structured_outputs_kinds() -> None:
    assert constraint_of({"structured_outputs": {"regex": "a+"}}) == Constraint(
        "regex", "a+", "structured_outputs"
    )
    grammar = constraint_of({"structured_outputs": {"grammar": "root ::= 'a'"}})
    assert grammar is not None
    assert grammar.kind == "grammar"


@pytest.mark.parametrize(
    "payload",
    [
        {"structured_outputs": {"json": {}, "regex": "a"}},
        {"structured_outputs": {"structural_tag": "x"}},
        {"response_format": {"type": "xml"}},
    ],
)
def test_what_no_engine_here_takes_is_refused(payload: dict[str, object]) -> None:
    with pytest.raises(UnsupportedParameter):
        constraint_of(payload)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, None),
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "regex", "regex": "a"}}, "response_format"),
        ({"structured_outputs": {"choice": None}}, None),
        ({"structured_outputs": {"choice": ["a"]}}, "structured_outputs"),
    ],
)
def test_the_field_a_constraint_is_asked_through(
    payload: dict[str, object], field: str | None
) -> None:
    assert constraint_field(payload) == field
