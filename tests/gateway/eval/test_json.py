"""The eval summary's JSON, byte for byte as `gateway eval --format json` printed it at
e5e77b5 (golden/, written by that commit's code) for the fixed runs of `eval_runs`."""

from __future__ import annotations

from pathlib import Path

from gateway.eval.render import render
from tests.gateway import eval_runs

GOLDEN = Path(__file__).parent / "golden"


def test_the_json_is_what_clients_have_read() -> None:
    summary = eval_runs.summary()
    expected = (GOLDEN / "three.json").read_text(encoding="utf-8")
    assert render(summary, "json") == expected
