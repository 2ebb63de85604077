"""Renders a shadow report (`gateway.report.summary.summarize`) as text, JSON or one HTML file.

The JSON is the summary itself, so every number in the text or the HTML can be recomputed
from it. The verdict comes first in every format; the HTML has the eval report's look.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

import orjson

from gateway.render import html as h

MEASURES = ("exact", "normalised", "structured")
CORNER = "primary \\ candidate"


def render(summary: Mapping[str, Any], fmt: str) -> str:
    renderers: dict[str, Callable[[Mapping[str, Any]], str]] = {
        "text": render_text,
        "json": render_json,
        "html": render_html,
    }
    return renderers[fmt](summary)


def render_json(summary: Mapping[str, Any]) -> str:
    return orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n"


def _rate(p: Mapping[str, Any] | None) -> str:
    if p is None or p["n"] == 0:
        return "n/a"
    return f"{p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}] {p['successes']}/{p['n']}"


def _ms(latency: Mapping[str, Any] | None, signed: bool = False) -> str:
    if latency is None:
        return "n/a"
    form = "+.1f" if signed else ".1f"
    keys = ("p50", "p95", "p99", "mean")
    return "  ".join(f"{key} {latency[key]:{form}}" for key in keys) + f"  (n {latency['n']})"


def title(summary: Mapping[str, Any]) -> str:
    if summary["primary"] is None:
        return "Shadow report: no pairs recorded"
    return f"Shadow report: {summary['candidate']} (candidate) vs {summary['primary']} (primary)"


def subtitle(summary: Mapping[str, Any]) -> str:
    window, pairs = summary["window"], summary["pairs"]
    span = f"{window['start']} to {window['end']}" if window else "no records"
    kept = {True: "; answer text stored", False: "; hashes only (no answer text)", None: ""}
    return (
        f"{span}; {pairs['shadow']} shadow pairs ({pairs['compared']} compared, "
        f"{pairs['parity_flagged']} parity-flagged), {pairs['noise']} noise-floor pairs, "
        f"{pairs['other']} of other backends left out{kept[summary['text_stored']]}"
    )


def render_text(summary: Mapping[str, Any]) -> str:
    verdict = summary["verdict"]
    lines = [title(summary), subtitle(summary), ""]
    lines.append(f"VERDICT: {'PASS' if verdict['passed'] else 'FAIL'}")
    lines += [f"  {reason}" for reason in verdict["reasons"]]
    errors = summary["pairs"]["errors"]
    lines += [
        "",
        f"errors: primary only {errors['primary']}, candidate only {errors['candidate']}, "
        f"both {errors['both']}",
    ]
    for role, backend in summary["backends"].items():
        lines += [
            "",
            f"== {role} {backend['name']}: {backend['count']} answers",
            f"errors              {_rate(backend['errors'])}",
            f"schema violations   {_rate(backend['schema_violations'])}",
            f"latency e2e ms      {_ms(backend['e2e_ms'])}",
            f"TTFT ms             {_ms(backend['ttft_ms'])}",
        ]
    deltas = summary["paired_delta_ms"]
    lines += ["", "== paired deltas, candidate minus primary (ms)"]
    lines += [f"e2e   {_ms(deltas['e2e'], True)}", f"TTFT  {_ms(deltas['ttft'], True)}"]
    lines += ["", "== agreement (Wilson 95%)", f"{'':<22}{'candidate':<40}noise floor"]
    for name, ours, noise in _agreement_rows(summary):
        lines.append(f"{name:<22}{_rate(ours):<40}{_rate(noise)}")
    for name, matrix in summary["confusion"].items():
        lines += ["", f"== confusion {name} (rows primary, columns candidate)"]
        lines += _text_matrix(matrix)
    lines += ["", *_text_parity(summary["parity"]), "", *_text_over_time(summary)]
    lines += ["", *_text_disagreements(summary["disagreements"])]
    return "\n".join(lines) + "\n"


def _agreement_rows(summary: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    ours, noise = summary["agreement"], summary["noise_floor"]
    rows = [(name, ours[name], noise[name]) for name in MEASURES]
    names = sorted(set(ours["fields"]) | set(noise["fields"]))
    rows += [
        (f"field {name}", ours["fields"].get(name), noise["fields"].get(name)) for name in names
    ]
    return rows


def _text_matrix(confusion: Mapping[str, Any]) -> list[str]:
    columns = confusion["predicted"]
    width = max(len(label) for label in [*columns, *confusion["labels"]]) + 2
    lines = [" " * width + "".join(f"{column:>{width}}" for column in columns)]
    for name, row in zip(confusion["labels"], confusion["matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{value:>{width}}" for value in row))
    return lines


def _text_parity(parity: Mapping[str, Any]) -> list[str]:
    lines = [f"== parameter parity: {_rate(parity['flagged'])} answered pairs flagged"]
    lines += [f"{reason}: {count}" for reason, count in parity["by_reason"].items()]
    for example in parity["examples"]:
        details = "; ".join(flag["detail"] for flag in example["flags"])
        lines.append(f"  {example['pair_id']} {example['created']}: {details}")
    return lines


def _text_over_time(summary: Mapping[str, Any]) -> list[str]:
    metric, over = summary["gate"]["agreement"], summary["over_time"]
    if not over["buckets"]:
        return ["== agreement over time: no compared pairs"]
    lines = [f"== {metric} agreement over time ({over['bucket_seconds']} s buckets)"]
    lines += [f"{b['start']}  {b['pairs']:>5} pairs  {_rate(b[metric])}" for b in over["buckets"]]
    return lines


def _text_disagreements(found: Mapping[str, Any]) -> list[str]:
    shown = found["shown"]
    lines = [f"== top disagreements: {found['total']} pairs, {len(shown)} shown"]
    if found["note"]:
        lines.append(found["note"])
    for pair in shown:
        differing = ", ".join(pair["fields_differing"]) or "none (text only)"
        lines.append(f"-- {pair['pair_id']} {pair['created']}; fields differing: {differing}")
        for role in ("primary", "candidate"):
            leg = pair[role]
            lines.append(f"   {role:<9} {leg['backend']}: {leg['text']!r}")
    return lines


def render_html(summary: Mapping[str, Any]) -> str:
    verdict = summary["verdict"]
    headline = f"Cutover gate for {summary['candidate'] or 'no candidate'}"
    sections = [h.verdict(verdict["passed"], headline, verdict["reasons"])]
    if summary["backends"]:
        sections += [_backends_section(summary), _latency_section(summary)]
        sections.append(_delta_section(summary["paired_delta_ms"]))
    sections += [_agreement_section(summary), _over_time_section(summary)]
    if summary["confusion"]:
        sections.append(_confusion_section(summary["confusion"]))
    sections += [_parity_section(summary["parity"]), _disagreement_section(summary)]
    sections.append(_gate_section(summary["gate"]))
    return h.page(title(summary), subtitle(summary), sections)


def _triple(latency: Mapping[str, Any] | None) -> str | None:
    keys = ("p50", "p95", "p99")
    return " / ".join(f"{latency[key]:.1f}" for key in keys) if latency else None


def _latencies(backend: Mapping[str, Any]) -> list[str | None]:
    return [_triple(backend["e2e_ms"]), _triple(backend["ttft_ms"])]


def _pct(p: Mapping[str, Any] | None) -> str | None:
    return (
        None if p is None or p["n"] == 0 else f"{p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}]"
    )


def _backends_section(summary: Mapping[str, Any]) -> str:
    headers = ["role", "backend", "answers", "errors", "schema violations"]
    headers += ["e2e ms p50 / p95 / p99", "TTFT ms p50 / p95 / p99"]
    rows = [
        [
            role,
            b["name"],
            b["count"],
            _pct(b["errors"]),
            _pct(b["schema_violations"]),
            *_latencies(b),
        ]
        for role, b in summary["backends"].items()
    ]
    return h.section("Backends (latency in ms, intervals Wilson 95%)", h.table(headers, rows))


def _latency_section(summary: Mapping[str, Any]) -> str:
    backends = list(summary["backends"].values())
    parts = []
    for key, label in (("e2e", "end to end"), ("ttft", "time to first token")):
        series = [(b["name"], [(ms, q) for ms, q in b["cdf_ms"][key]]) for b in backends]
        if all(points for _, points in series):
            parts.append(h.heading(f"Distribution, {label}: share of answers at most this slow"))
            parts.append(
                h.line_chart(series, x_label=f"ms, {label}", y_label="share", percent=True)
            )
    series_bars = []
    for key in ("p50", "p95", "p99"):
        series_bars.append((key, [b["e2e_ms"][key] if b["e2e_ms"] else 0.0 for b in backends]))
    parts += [
        h.heading("End to end percentiles"),
        h.grouped_bars([b["name"] for b in backends], series_bars, "ms"),
    ]
    return h.section("Latency per backend", *parts)


def _delta_section(deltas: Mapping[str, Any]) -> str:
    items = [
        (f"{name.replace('ttft', 'TTFT')} {key}", deltas[name][key])
        for name in ("e2e", "ttft")
        if deltas[name]
        for key in ("p50", "p95", "p99")
    ]
    rows = [
        [
            name.replace("ttft", "TTFT"),
            d["n"],
            *(f"{d[key]:+.1f}" for key in ("p50", "p95", "p99", "mean")),
        ]
        for name, d in deltas.items()
        if d
    ]
    table = h.table(["measure", "pairs", "p50", "p95", "p99", "mean"], rows)
    parts = [h.signed_bars(items, "ms"), table] if items else ["<p class=muted>no pairs</p>"]
    return h.section("Paired deltas: candidate minus primary on the same requests (ms)", *parts)


def _agreement_section(summary: Mapping[str, Any]) -> str:
    rows = _agreement_rows(summary)
    items = []
    for name, ours, noise in rows:
        for who, p in (("candidate", ours), ("noise floor", noise)):
            if p is not None and p["n"]:
                items.append((f"{name}: {who}", p["rate"], p["low"], p["high"]))
    table = h.table(
        ["measure", "candidate vs primary", "pairs", "noise floor (primary vs primary)", "pairs"],
        [
            [name, _pct(ours), ours and ours["n"], _pct(noise), noise and noise["n"]]
            for name, ours, noise in rows
        ],
    )
    chart = h.interval_chart(items) if items else "<p class=muted>no compared pairs</p>"
    return h.section("Agreement (Wilson 95%)", chart, table)


def _over_time_section(summary: Mapping[str, Any]) -> str:
    metric, over = summary["gate"]["agreement"], summary["over_time"]
    buckets = [b for b in over["buckets"] if b[metric]["n"]]
    if not buckets:
        return h.section("Agreement over time", "<p class=muted>no compared pairs</p>")
    points = [(float(b["t"]), b[metric]["rate"]) for b in buckets]
    band = [(float(b["t"]), b[metric]["low"], b[metric]["high"]) for b in buckets]
    noise = summary["noise_floor"][metric]
    reference = (f"noise floor {noise['rate']:.1%}", noise["rate"]) if noise["n"] else None
    step = max(1, len(buckets) // 6)
    form = "%m-%d %H:%M" if over["bucket_seconds"] < 86400 else "%Y-%m-%d"
    ticks = [(float(b["t"]), _clock(b["t"], form)) for b in buckets[::step]]
    chart = h.line_chart(
        [(f"{metric} agreement", points)],
        x_label="UTC",
        y_label="agreement",
        percent=True,
        bands=[band],
        reference=reference,
        x_ticks=ticks,
    )
    minutes = over["bucket_seconds"] / 60
    return h.section(f"{metric.capitalize()} agreement over time ({minutes:g} min buckets)", chart)


def _clock(seconds: float, form: str) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(form)


def _confusion_section(confusion: Mapping[str, Any]) -> str:
    parts = []
    for name, matrix in confusion.items():
        parts.append(h.heading(name))
        parts.append(h.heatmap(matrix["labels"], matrix["predicted"], matrix["matrix"], CORNER))
    return h.section("Confusion of categorical fields (rows primary, columns candidate)", *parts)


def _parity_section(parity: Mapping[str, Any]) -> str:
    reasons = h.table(["reason", "pairs"], list(parity["by_reason"].items()))
    examples = [
        [e["pair_id"], e["created"], "; ".join(f["detail"] for f in e["flags"])]
        for e in parity["examples"]
    ]
    heading = h.heading(f"{_pct(parity['flagged']) or 'none'} of answered pairs flagged; newest:")
    return h.section(
        "Parameter parity: pairs left out of agreement",
        heading,
        reasons,
        h.table(["pair", "time", "what differed"], examples, "texts"),
    )


def _disagreement_section(summary: Mapping[str, Any]) -> str:
    found = summary["disagreements"]
    parts = [f"<p class=muted>{escape(found['note'])}</p>"] if found["note"] else []
    rows: list[Sequence[object]] = []
    for pair in found["shown"]:
        differing = ", ".join(pair["fields_differing"]) or "-"
        about = f"{pair['pair_id']}\n{pair['created']}\nfields: {differing}"
        rows.append([about, pair["request"], pair["primary"]["text"], pair["candidate"]["text"]])
    names = (summary["primary"], summary["candidate"])
    headers = ["pair", "request", f"primary {names[0]}", f"candidate {names[1]}"]
    parts.append(h.table(headers, rows, "texts"))
    shown = f"{found['total']} pairs, {len(found['shown'])} shown"
    return h.section(f"Top disagreements, side by side ({shown})", *parts)


def _gate_section(gate: Mapping[str, Any]) -> str:
    return h.section("Gate rule", h.table(["setting", "value"], list(gate.items())))
