"""Renders an evaluation summary (`gateway.eval.summary`) as text, JSON or one HTML file.

The JSON is the summary itself (`gateway.render.json`), per-example rows included, so any
number in the text or HTML can be recomputed from it. Numbers are written by
`gateway.render.text`, as the shadow report's are. Reports carry ids and labels, never the
children's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gateway.eval.summary import EvalSummary, PairAgreement, TargetScore
from gateway.render import charts, text
from gateway.render import html as h
from gateway.render.json import render_json
from gateway.stats import Proportion


def render(summary: EvalSummary, fmt: str) -> str:
    renderers: dict[str, Callable[[EvalSummary], str]] = {
        "text": render_text,
        "json": render_json,
        "html": render_html,
    }
    return renderers[fmt](summary)


def _rate(p: Proportion) -> str:
    return f"{text.counts(p)} {text.interval(p)}"


def _title(summary: EvalSummary) -> str:
    return (
        f"{summary.task} {summary.version} (prompt {summary.fingerprint}) on "
        f"{summary.dataset}, split {summary.split}: {summary.examples} examples, "
        f"concurrency {summary.concurrency}"
    )


def _tokens(target: TargetScore) -> str:
    tokens = target.output_tokens
    if tokens is None:
        return "no usage reported"
    return f"mean {tokens.mean:.2f} (min {tokens.min}, max {tokens.max})"


def _f1(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def render_text(summary: EvalSummary) -> str:
    lines = [_title(summary), ""]
    for target in summary.targets:
        lines += [
            f"== {target.name} ({target.mode}, model {target.model}) {target.url}",
            f"schema-valid        {_rate(target.schema_valid)}   errors {target.errors}",
            f"exact (all fields)  {_rate(target.exact)}",
        ]
        for name, score in target.fields.items():
            shown = _f1(score.macro_f1) or "n/a"
            lines.append(f"{name + ' accuracy':<20}{_rate(score.accuracy)}   macro-F1 {shown}")
        lines += [
            f"output tokens       {_tokens(target)}",
            f"latency ms          {text.spread(target.latency_ms)}",
        ]
        for name, score in target.fields.items():
            lines += ["", f"confusion {name} (rows gold, columns predicted)"]
            lines += text.matrix(score.confusion)
        lines.append("")
    if summary.agreement:
        lines.append("== agreement between targets")
        for pair in summary.agreement:
            lines.append(f"{pair.first} vs {pair.second}: exact {_rate(pair.exact)}")
            lines += [f"    {name:<16}{_rate(value)}" for name, value in pair.fields.items()]
    return "\n".join(lines) + "\n"


def render_html(summary: EvalSummary) -> str:
    targets = summary.targets
    sections = [_overview(targets), _latency_section(targets)]
    sections += [_target_section(target) for target in targets]
    if summary.agreement:
        sections.append(_agreement_section(summary.agreement))
    sections.append(_rows_section(summary, [target.name for target in targets]))
    title = f"{summary.task} evaluation: {summary.version}"
    return h.page(title, _title(summary), sections)


def _overview(targets: Sequence[TargetScore]) -> str:
    headers = ["target", "mode", "model", "schema-valid", "exact"]
    fields = list(targets[0].fields) if targets else []
    headers += [f"{name} acc" for name in fields] + [f"{name} macro-F1" for name in fields]
    headers += ["tokens (mean)", *(f"{key} ms" for key in text.PERCENTILES)]
    rows = []
    for t in targets:
        row: list[object] = [t.name, t.mode, t.model]
        row += [text.percent(t.schema_valid.rate), text.percent(t.exact.rate)]
        row += [text.percent(t.fields[name].accuracy.rate) for name in fields]
        row += [_f1(t.fields[name].macro_f1) for name in fields]
        row.append(f"{t.output_tokens.mean:.2f}" if t.output_tokens else None)
        row += [f"{value:.1f}" for value in t.latency_ms.percentiles]
        rows.append(row)
    return h.section("Targets", h.table(headers, rows))


def _latency_section(targets: Sequence[TargetScore]) -> str:
    series = [
        (key, [t.latency_ms.percentiles[index] for t in targets])
        for index, key in enumerate(text.PERCENTILES)
    ]
    chart = charts.grouped_bars([t.name for t in targets], series, "ms")
    return h.section("Latency per request (client side)", chart)


def _target_section(target: TargetScore) -> str:
    bars = [("schema-valid", target.schema_valid), ("exact (all fields)", target.exact)]
    bars += [(f"{name} accuracy", score.accuracy) for name, score in target.fields.items()]
    parts = [charts.interval_chart(bars)]
    for name, score in target.fields.items():
        parts += [
            h.heading(f"{name}: confusion (macro-F1 {_f1(score.macro_f1) or 'n/a'})"),
            h.heatmap(score.confusion),
        ]
    latency = text.spread(target.latency_ms)
    parts.append(h.heading(f"output tokens: {_tokens(target)}; latency ms: {latency}"))
    title = f"{target.name} ({target.mode}, model {target.model}, {target.url})"
    return h.section(title, *parts)


def _agreement_section(pairs: Sequence[PairAgreement]) -> str:
    items = []
    for pair in pairs:
        names = f"{pair.first} vs {pair.second}"
        items.append((f"{names}: exact", pair.exact))
        items += [(f"{names}: {field}", p) for field, p in pair.fields.items()]
    rows = [[label, text.percent(p.rate), text.bounds(p)] for label, p in items]
    return h.section(
        "Agreement between targets (Wilson 95%)",
        charts.interval_chart(items),
        h.table(["pair / field", "agreement", "interval"], rows),
    )


def _rows_section(summary: EvalSummary, names: Sequence[str]) -> str:
    """Examples where some target is wrong or targets disagree (the first 100)."""
    shown = [
        row
        for row in summary.rows
        if any(row.predictions[name].labels != row.gold for name in names)
    ]
    fields = list(summary.fields)
    headers = ["id", "gold", *names]
    body = [
        [row.id, _labels(row.gold, fields)]
        + [_labels(row.predictions[name].labels, fields) for name in names]
        for row in shown[:100]
    ]
    note = f"{len(shown)} of {len(summary.rows)} examples"
    return h.section(f"Misses and disagreements ({note})", h.table(headers, body))


def _labels(labels: Mapping[str, str] | None, fields: Sequence[str]) -> str:
    return " / ".join(labels[name] for name in fields) if labels else "(invalid)"
