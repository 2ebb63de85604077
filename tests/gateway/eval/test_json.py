"""The eval summary's JSON, byte for byte as `gateway eval --format json` printed it at
e5e77b5 (golden/, written by that commit's code) for the fixed runs of `eval_runs`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from gateway.eval import render, summary
from tests.gateway import eval_runs

GOLDEN = Path(__file__).parent / "golden"


class Fixed(datetime):
    @classmethod
    def now(cls, tz: object = None) -> Fixed:
        return cls.fromisoformat(eval_runs.CREATED)


def test_the_json_is_what_clients_have_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "datetime", Fixed)
    value = summary.summarize(
        eval_runs.task(), eval_runs.examples(), eval_runs.runs(), eval_runs.META
    )
    expected = (GOLDEN / "three.json").read_text(encoding="utf-8")
    assert render.render(value, "json") == expected
