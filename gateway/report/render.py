"""Renders a shadow report (`gateway.report.summary.summarize`) as text, JSON or one HTML file.

The JSON is the report itself (`gateway.render.json`), so every number in the text or the HTML
can be recomputed from it. The verdict comes first in every format; the HTML (`page`) has the
eval report's look. Numbers are written by `gateway.render.text`, as the eval's are.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.render import text
from gateway.render.json import render_json
from gateway.report.page import (
    agreement_rows,
    evidence_lines,
    probe_lines,
    render_html,
    subtitle,
    title,
)
from gateway.report.values import Disagreements, Parity, ShadowReport
from gateway.stats import Latency, Proportion


def render(report: ShadowReport, fmt: str) -> str:
    renderers: dict[str, Callable[[ShadowReport], str]] = {
        "text": render_text,
        "json": render_json,
        "html": render_html,
    }
    return renderers[fmt](report)


def _rate(p: Proportion | None) -> str:
    return "n/a" if p is None or p.n == 0 else f"{text.interval(p)} {text.counts(p)}"


def _ms(latency: Latency | None, signed: bool = False) -> str:
    return "n/a" if latency is None else f"{text.spread(latency, signed)}  (n {latency.n})"


def render_text(report: ShadowReport) -> str:
    verdict, errors = report.verdict, report.pairs.errors
    lines = [title(report), subtitle(report), ""]
    lines.append(f"VERDICT: {'PASS' if verdict.passed else 'FAIL'}")
    lines += [f"  {reason}" for reason in verdict.reasons]
    lines += ["", *probe_lines(report)]
    lines += [
        "",
        f"errors: primary only {errors.primary}, candidate only {errors.candidate}, "
        f"both {errors.both}",
    ]
    for role, backend in report.backends.roles() if report.backends else ():
        lines += [
            "",
            f"== {role} {backend.name}: {backend.count} answers",
            f"errors              {_rate(backend.errors)}",
            f"schema violations   {_rate(backend.schema_violations)}",
            f"latency e2e ms      {_ms(backend.e2e_ms)}",
            f"TTFT ms             {_ms(backend.ttft_ms)}",
        ]
    deltas = report.paired_delta_ms
    lines += ["", "== paired deltas, candidate minus primary (ms)"]
    lines += [f"e2e   {_ms(deltas.e2e, True)}", f"TTFT  {_ms(deltas.ttft, True)}"]
    lines += ["", "== agreement (Wilson 95%)", f"{'':<22}{'candidate':<40}noise floor"]
    for name, ours, noise in agreement_rows(report):
        lines.append(f"{name:<22}{_rate(ours):<40}{_rate(noise)}")
    for name, confusion in report.confusion.items():
        lines += ["", f"== confusion {name} (rows primary, columns candidate)"]
        lines += text.matrix(confusion)
    lines += ["", *_text_parity(report.parity)]
    lines += ["", "== same request on both legs", *evidence_lines(report.evidence)]
    lines += ["", *_text_over_time(report)]
    lines += ["", *_text_disagreements(report.disagreements)]
    return "\n".join(lines) + "\n"


def _text_parity(parity: Parity) -> list[str]:
    lines = [f"== parameter parity: {_rate(parity.flagged)} answered pairs flagged"]
    lines += [f"{reason}: {count}" for reason, count in parity.by_reason.items()]
    for example in parity.examples:
        details = "; ".join(flag.detail for flag in example.flags)
        lines.append(f"  {example.pair_id} {example.created}: {details}")
    return lines


def _text_over_time(report: ShadowReport) -> list[str]:
    metric, over = report.gate.agreement, report.over_time
    if not over.buckets:
        return ["== agreement over time: no compared pairs"]
    lines = [f"== {metric} agreement over time ({over.bucket_seconds} s buckets)"]
    lines += [
        f"{bucket.start}  {bucket.pairs:>5} pairs  {_rate(bucket.measures.of(metric))}"
        for bucket in over.buckets
    ]
    return lines


def _text_disagreements(found: Disagreements) -> list[str]:
    lines = [f"== top disagreements: {found.total} pairs, {len(found.shown)} shown"]
    if found.note:
        lines.append(found.note)
    for pair in found.shown:
        differing = ", ".join(pair.fields_differing) or "none (text only)"
        lines.append(f"-- {pair.pair_id} {pair.created}; fields differing: {differing}")
        if pair.divergence is not None:
            part = pair.divergence
            lines.append(
                f"   first differs at {part.unit} {part.index}: "
                f"{part.primary!r} vs {part.candidate!r}"
            )
        for role, leg in (("primary", pair.primary), ("candidate", pair.candidate)):
            lines.append(f"   {role:<9} {leg.backend}: {leg.text!r}")
    return lines
