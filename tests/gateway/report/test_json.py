"""The shadow report's JSON, byte for byte as `gateway report --format json` and
`/admin/report?format=json` print it: clients that read it see a change only when a commit
rewrites these files on purpose (the last: the `probes` and `evidence` sections and each
disagreement's `divergence`, added beside the keys of e5e77b5).

The files in golden/ hold what this code prints; a deliberate change of the JSON's
shape rewrites them (and says so to the clients).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.gate_rule import GateRule
from gateway.records.redaction import redact
from gateway.report.render import render
from gateway.report.summary import summarize
from gateway.shadow.pairs import PairRecord
from tests.gateway.report.test_summary import LOOSE
from tests.gateway.shadow_pairs import records

GOLDEN = Path(__file__).parent / "golden"
CASES: dict[str, tuple[list[PairRecord], GateRule, str | None]] = {
    "pass": (records(), LOOSE, None),
    "fail": (records(), replace(LOOSE, min_pairs=200), "2023-11-14T22:00:00+00:00"),
    "hashes": ([redact(record) for record in records()], LOOSE, None),
    "empty": ([], GateRule(), None),
}


@pytest.mark.parametrize("name", CASES)
def test_the_json_is_what_clients_have_read(name: str) -> None:
    pairs, rule, since = CASES[name]
    expected = (GOLDEN / f"{name}.json").read_text(encoding="utf-8")
    assert render(summarize(pairs, rule, since), "json") == expected
