"""The eval summary's JSON, byte for byte as `gateway eval --format json` printed it at
e5e77b5 (golden/, written by that commit's code) for the fixed runs of `eval_runs`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gateway.eval.render import render
from gateway.eval.summary import summarize
from tests.gateway import eval_runs

GOLDEN = Path(__file__).parent / "golden"


def test_the_json_is_what_clients_have_read() -> None:
    created = datetime.fromisoformat(eval_runs.CREATED)
    summary = summarize(
        eval_runs.task(),
        eval_runs.examples(),
        eval_runs.runs(),
        dataset="moods.jsonl",
        split="test",
        concurrency=4,
        created=created,
    )
    expected = (GOLDEN / "three.json").read_text(encoding="utf-8")
    assert render(summary, "json") == expected
