"""The shadow report as one HTML file (`gateway.render.html` and `.charts`), and the title and
subtitle every format of it opens with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, fields
from datetime import UTC, datetime
from html import escape

from gateway.gate_rule import METRICS, GateRule
from gateway.render import charts, text
from gateway.render import html as h
from gateway.report.values import Backends, BackendStats, Deltas, Evidence, Parity, ShadowReport
from gateway.stats import Confusion, Latency, Proportion

CORNER = "primary \\ candidate"
MUTED = "<p class=muted>{}</p>"


def title(report: ShadowReport) -> str:
    if report.primary is None:
        return "Shadow report: no pairs recorded"
    return f"Shadow report: {report.candidate} (candidate) vs {report.primary} (primary)"


def subtitle(report: ShadowReport) -> str:
    window, pairs = report.window, report.pairs
    span = f"{window.start} to {window.end}" if window else "no records"
    kept = {True: "; answer text stored", False: "; hashes only (no answer text)", None: ""}
    return (
        f"{span}; {pairs.shadow} shadow pairs ({pairs.compared} compared, "
        f"{pairs.parity_flagged} parity-flagged), {pairs.noise} noise-floor pairs, "
        f"{pairs.other} of other backends left out{kept[report.text_stored]}"
    )


def agreement_rows(report: ShadowReport) -> list[tuple[str, Proportion | None, Proportion | None]]:
    """(measure, candidate, noise floor): the three measures, then every field either has."""
    ours, noise = report.agreement, report.noise_floor.agreement
    rows: list[tuple[str, Proportion | None, Proportion | None]] = [
        (name, ours.of(name), noise.of(name)) for name in METRICS
    ]
    names = sorted(set(ours.fields) | set(noise.fields))
    rows += [(f"field {name}", ours.fields.get(name), noise.fields.get(name)) for name in names]
    return rows


def render_html(report: ShadowReport) -> str:
    return h.page(title(report), subtitle(report), report_sections(report))


def render_html_routes(reports: Mapping[str, ShadowReport]) -> str:
    """Several routes' reports on one page, each under its route's name."""
    passed = all(report.verdict.passed for report in reports.values())
    parts = [
        f"<h2>Route {escape(route)}: {'PASS' if report.verdict.passed else 'FAIL'}</h2>"
        + "".join(report_sections(report))
        for route, report in reports.items()
    ]
    heading = f"Shadow reports of {len(reports)} routes: {'PASS' if passed else 'FAIL'}"
    return h.page(heading, ", ".join(reports), parts)


def report_sections(report: ShadowReport) -> list[str]:
    verdict = report.verdict
    headline = f"Cutover gate for {report.candidate or 'no candidate'}"
    sections = [h.verdict(verdict.passed, headline, verdict.reasons), _probe_section(report)]
    if report.backends:
        sections += [_backends_section(report.backends), _latency_section(report.backends)]
        sections.append(_delta_section(report.paired_delta_ms))
    sections += [_agreement_section(report), _over_time_section(report)]
    if report.confusion:
        sections.append(_confusion_section(report.confusion))
    sections += [_parity_section(report.parity), _evidence_section(report.evidence)]
    sections.append(_disagreement_section(report))
    sections.append(_gate_section(report.gate))
    return sections


def _backends_section(backends: Backends) -> str:
    headers = ["role", "backend", "answers", "errors", "schema violations"]
    headers += ["e2e ms p50 / p95 / p99", "TTFT ms p50 / p95 / p99"]
    rows = [_backend_row(role, b) for role, b in backends.roles()]
    return h.section("Backends (latency in ms, intervals Wilson 95%)", h.table(headers, rows))


def _backend_row(role: str, b: BackendStats) -> list[object]:
    shares = [text.shown(b.errors), text.shown(b.schema_violations)]
    return [role, b.name, b.count, *shares, text.triple(b.e2e_ms), text.triple(b.ttft_ms)]


def _latency_section(backends: Backends) -> str:
    both = [b for _, b in backends.roles()]
    parts = []
    for curves, label in (
        ([(b.name, b.cdf_ms.e2e) for b in both], "end to end"),
        ([(b.name, b.cdf_ms.ttft) for b in both], "time to first token"),
    ):
        if all(points for _, points in curves):
            parts.append(h.heading(f"Distribution, {label}: share of answers at most this slow"))
            parts.append(
                charts.line_chart(curves, x_label=f"ms, {label}", y_label="share", percent=True)
            )
    bars = [
        (key, [b.e2e_ms.percentiles[index] if b.e2e_ms else 0.0 for b in both])
        for index, key in enumerate(text.PERCENTILES)
    ]
    parts += [
        h.heading("End to end percentiles"),
        charts.grouped_bars([b.name for b in both], bars, "ms"),
    ]
    return h.section("Latency per backend", *parts)


def _delta_section(deltas: Deltas) -> str:
    measured: list[tuple[str, Latency]] = [
        (name, d) for name, d in (("e2e", deltas.e2e), ("TTFT", deltas.ttft)) if d
    ]
    items = [
        (f"{name} {key}", value)
        for name, d in measured
        for key, value in zip(text.PERCENTILES, d.percentiles, strict=True)
    ]
    rows = [
        [name, d.n, *(f"{value:+.1f}" for value in (*d.percentiles, d.mean))]
        for name, d in measured
    ]
    table = h.table(["measure", "pairs", *text.PERCENTILES, "mean"], rows)
    parts = [charts.signed_bars(items, "ms"), table] if items else [MUTED.format("no pairs")]
    return h.section("Paired deltas: candidate minus primary on the same requests (ms)", *parts)


def _agreement_section(report: ShadowReport) -> str:
    rows = agreement_rows(report)
    items = [
        (f"{name}: {who}", p)
        for name, ours, noise in rows
        for who, p in (("candidate", ours), ("noise floor", noise))
        if p is not None and p.n
    ]
    table = h.table(
        ["measure", "candidate vs primary", "pairs", "noise floor (primary vs primary)", "pairs"],
        [
            [name, text.shown(ours), ours and ours.n, text.shown(noise), noise and noise.n]
            for name, ours, noise in rows
        ],
    )
    chart = charts.interval_chart(items) if items else MUTED.format("no compared pairs")
    return h.section("Agreement (Wilson 95%)", chart, table)


def _over_time_section(report: ShadowReport) -> str:
    metric, over = report.gate.agreement, report.over_time
    buckets = [(b.t, b.measures.of(metric)) for b in over.buckets if b.measures.of(metric).n]
    if not buckets or over.bucket_seconds is None:
        return h.section("Agreement over time", MUTED.format("no compared pairs"))
    noise = report.noise_floor.agreement.of(metric)
    reference = (f"noise floor {text.percent(noise.rate)}", noise.rate) if noise.n else None
    step = max(1, len(buckets) // 6)
    form = "%m-%d %H:%M" if over.bucket_seconds < 86400 else "%Y-%m-%d"
    chart = charts.line_chart(
        [(f"{metric} agreement", [(float(t), p.rate) for t, p in buckets])],
        x_label="UTC",
        y_label="agreement",
        percent=True,
        bands=[[(float(t), p.low, p.high) for t, p in buckets]],
        reference=reference,
        x_ticks=[(float(t), _clock(t, form)) for t, _ in buckets[::step]],
    )
    minutes = over.bucket_seconds / 60
    return h.section(f"{metric.capitalize()} agreement over time ({minutes:g} min buckets)", chart)


def _clock(seconds: float, form: str) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(form)


def _confusion_section(confusion: dict[str, Confusion]) -> str:
    parts = []
    for name, matrix in confusion.items():
        parts += [h.heading(name), h.heatmap(matrix, CORNER)]
    return h.section("Confusion of categorical fields (rows primary, columns candidate)", *parts)


def _parity_section(parity: Parity) -> str:
    reasons = h.table(["reason", "pairs"], list(parity.by_reason.items()))
    examples = [
        [e.pair_id, e.created, "; ".join(flag.detail for flag in e.flags)] for e in parity.examples
    ]
    heading = h.heading(
        f"{text.shown(parity.flagged) or 'none'} of answered pairs flagged; newest:"
    )
    return h.section(
        "Parameter parity: pairs left out of agreement",
        heading,
        reasons,
        h.table(["pair", "time", "what differed"], examples, "texts"),
    )


def probe_lines(report: ShadowReport) -> list[str]:
    """Each backend's conformance probes, failures first: what its engine honours."""
    if not report.probes:
        return ["conformance probes: none recorded (GATEWAY_PROBE_CONFORMANCE_INTERVAL)"]
    order = {"fail": 0, "error": 1, "refused": 2, "pass": 3}
    lines = ["conformance probes (latest):"]
    for result in sorted(report.probes, key=lambda r: (order[r.outcome], r.backend, r.check)):
        when = datetime.fromtimestamp(result.at, UTC).isoformat(timespec="seconds")
        lines.append(
            f"  {result.outcome.upper():<8}{result.backend} {result.check}: {result.detail} "
            f"({when})"
        )
    return lines


def _probe_section(report: ShadowReport) -> str:
    rows = [[line.strip()] for line in probe_lines(report)]
    return h.section("Conformance probes", h.table(["what each engine honours"], rows, "texts"))


def evidence_lines(evidence: Evidence) -> list[str]:
    """What proves the legs ran the same request, one finding a line."""
    answered = evidence.answered
    lines = [
        f"prompt ids: known on both legs for {evidence.prompts_known} of {answered} answered "
        f"pairs, identical in {evidence.prompts_same}",
        f"effective sampling: recorded on both legs for {evidence.sampling_known} of "
        f"{answered}, the same in {evidence.sampling_same}",
    ]
    if evidence.latest is not None:
        for side, values in zip(("primary", "candidate"), evidence.latest, strict=True):
            shown = ", ".join(f"{name} {value}" for name, value in values.items())
            lines.append(f"  newest pair, {side}: {shown}")
    for unit, spread in (
        ("token", evidence.diverged_at_token),
        ("character", evidence.diverged_at_character),
    ):
        if spread is not None:
            lines.append(
                f"disagreeing answers first differ at {unit} {spread.p50:g} "
                f"(median; p95 {spread.p95:g}; n {spread.n})"
            )
    return lines


def _evidence_section(evidence: Evidence) -> str:
    rows = [[line] for line in evidence_lines(evidence)]
    return h.section("Same request on both legs", h.table(["evidence"], rows, "texts"))


def _disagreement_section(report: ShadowReport) -> str:
    found = report.disagreements
    parts = [MUTED.format(escape(found.note))] if found.note else []
    rows: list[Sequence[object]] = []
    for pair in found.shown:
        differing = ", ".join(pair.fields_differing) or "-"
        about = f"{pair.pair_id}\n{pair.created}\nfields: {differing}"
        if pair.divergence is not None:
            about += f"\nfirst differs at {pair.divergence.unit} {pair.divergence.index}"
        rows.append([about, pair.request, pair.primary.text, pair.candidate.text])
    headers = ["pair", "request", f"primary {report.primary}", f"candidate {report.candidate}"]
    parts.append(h.table(headers, rows, "texts"))
    shown = f"{found.total} pairs, {len(found.shown)} shown"
    return h.section(f"Top disagreements, side by side ({shown})", *parts)


def _gate_section(gate: GateRule) -> str:
    rows = list(zip((spec.name for spec in fields(gate)), astuple(gate), strict=True))
    return h.section("Gate rule", h.table(["setting", "value"], rows))
