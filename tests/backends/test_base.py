"""backends.base: a tagged request is the same request, under an id of its own."""

from __future__ import annotations

from dataclasses import fields

from backends.base import Route, UpstreamRequest


def test_a_tagged_request_keeps_every_field_but_its_id() -> None:
    request = UpstreamRequest(Route.COMPLETIONS, b'{"prompt":"x"}', {"prompt": "x"}, "m", "r", True)
    tagged = request.tagged("shadow")
    assert tagged.request_id == "r-shadow"
    for field in fields(UpstreamRequest):  # one left out or swapped fails here
        if field.name != "request_id":
            assert getattr(tagged, field.name) == getattr(request, field.name), field.name
