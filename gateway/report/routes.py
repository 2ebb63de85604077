"""Reports per route: each route's pairs judged by its own gate, rendered one after another.

Pairs carry the route that took them (`PairRecord.route`); pairs stored before routes existed
go under their model name. A report of one route keeps the single report's shape; several
become `{"routes": {name: report}, "passed": ...}` in JSON, sections in text and HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.gate_rule import GateRule
from gateway.probes import ProbeResult
from gateway.render.json import render_json
from gateway.report.page import render_html_routes
from gateway.report.render import render, render_text
from gateway.report.summary import summarize
from gateway.report.values import ShadowReport
from gateway.shadow.pairs import PairRecord


def route_of(pair: PairRecord) -> str:
    return pair.route or pair.public_model


def summarize_routes(
    pairs: Sequence[PairRecord],
    rules: Mapping[str, GateRule],
    default: GateRule,
    since: str | None = None,
    probes: Sequence[ProbeResult] = (),
    only: str | None = None,
) -> dict[str, ShadowReport]:
    """A report per route: those configured to shadow (`rules`) and those the pairs name, or
    only `only`; each judged by its route's rule (`default` for a route no longer configured)."""
    grouped: dict[str, list[PairRecord]] = {name: [] for name in rules}
    for pair in pairs:
        grouped.setdefault(route_of(pair), []).append(pair)
    names = [only] if only is not None else sorted(grouped)
    if not names:  # nothing shadowed yet: the conformance probes still head the report
        return {"": summarize([], default, since, probes)}
    reports = {}
    for name in names:
        routed = grouped.get(name, [])
        backends = {leg.backend for pair in routed for leg in (pair.primary, pair.candidate)}
        own = [probe for probe in probes if probe.backend in backends] if backends else probes
        reports[name] = summarize(routed, rules.get(name, default), since, own)
    return reports


def passed(reports: Mapping[str, ShadowReport]) -> bool:
    return all(report.verdict.passed for report in reports.values())


def render_routes(reports: Mapping[str, ShadowReport], fmt: str) -> str:
    if len(reports) == 1:
        return render(next(iter(reports.values())), fmt)
    if fmt == "json":
        return render_json({"routes": dict(reports), "passed": passed(reports)})
    if fmt == "html":
        return render_html_routes(reports)
    verdict = "PASS" if passed(reports) else "FAIL"
    parts = [f"{len(reports)} routes: {verdict}"]
    for name, report in reports.items():
        parts.append(f"\n{'=' * 24} route {name} {'=' * 24}\n" + render_text(report))
    return "\n".join(parts)
