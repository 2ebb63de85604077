"""Reports per route: each route's pairs judged by its own gate, rendered one after another.

Pairs carry the route that took them (`PairRecord.route`); pairs stored before routes existed
go under their model name. A report of one route keeps the single report's shape; several
become `{"routes": {name: report}, "passed": ...}` in JSON, sections in text and HTML. The
exit code of `gateway report` fails when any route fails.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

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


class UnknownRoute(ValueError):
    """A report asked for a route that is neither configured nor in the records."""


def summarize_routes(
    pairs: Sequence[PairRecord],
    rules: Mapping[str, GateRule],
    default: GateRule,
    since: str | None = None,
    probes: Sequence[ProbeResult] = (),
    only: str | None = None,
    shadowing: Collection[str] = (),
) -> dict[str, ShadowReport]:
    """A report per route: each route shadowing now (`shadowing`) and each the pairs name, or
    only `only`; each judged by its route's rule (`rules`; `default` for a route no longer
    configured). With none of them, one report of no pairs, which fails the gate: no evidence
    never passes. `UnknownRoute` for an `only` neither configured nor in the pairs."""
    grouped: dict[str, list[PairRecord]] = {name: [] for name in shadowing}
    for pair in pairs:
        grouped.setdefault(route_of(pair), []).append(pair)
    if only is not None and only not in grouped and only not in rules:
        known = ", ".join(sorted({*grouped, *rules})) or "none"
        raise UnknownRoute(f"no route {only!r}; routes configured or in the records: {known}")
    names = [only] if only is not None else sorted(grouped) or [""]
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
