"""gateway.report.routes: a report per route, and the probes shown before any pair exists."""

from __future__ import annotations

from gateway.gate_rule import GateRule
from gateway.probes import ProbeResult
from gateway.report.routes import render_routes, summarize_routes


def test_the_probes_head_the_report_before_any_pair_is_stored() -> None:
    probe = ProbeResult("trt", "constraint", "fail", "accepted a choice and answered 'x'", 1.0)
    reports = summarize_routes([], {}, GateRule(), probes=[probe])
    assert len(reports) == 1
    text = render_routes(reports, "text")
    assert "FAIL    trt constraint: accepted a choice and answered 'x'" in text
    assert "routes:" not in text
