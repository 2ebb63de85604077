"""Renders an evaluation summary (`gateway.eval.summary`) as text, JSON or one HTML file.

The JSON is the summary itself, per-example rows included, so any number in the text or HTML
can be recomputed from it. Reports carry ids and labels, never the children's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from gateway.render import html as h


def render(summary: Mapping[str, Any], fmt: str) -> str:
    renderers: dict[str, Callable[[Mapping[str, Any]], str]] = {
        "text": render_text,
        "json": render_json,
        "html": render_html,
    }
    return renderers[fmt](summary)


def render_json(summary: Mapping[str, Any]) -> str:
    return orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n"


def _rate(p: Mapping[str, Any]) -> str:
    return f"{p['successes']}/{p['n']} {p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}]"


def _title(summary: Mapping[str, Any]) -> str:
    return (
        f"{summary['task']} {summary['version']} (prompt {summary['fingerprint']}) on "
        f"{summary['dataset']}, split {summary['split']}: {summary['examples']} examples, "
        f"concurrency {summary['concurrency']}"
    )


def _tokens(target: Mapping[str, Any]) -> str:
    tokens = target["output_tokens"]
    if tokens is None:
        return "no usage reported"
    return f"mean {tokens['mean']:.2f} (min {tokens['min']}, max {tokens['max']})"


def _latency(target: Mapping[str, Any]) -> str:
    latency = target["latency_ms"]
    return "  ".join(f"{key} {latency[key]:.1f}" for key in ("p50", "p95", "p99", "mean"))


def render_text(summary: Mapping[str, Any]) -> str:
    lines = [_title(summary), ""]
    for target in summary["targets"]:
        lines += [
            f"== {target['name']} ({target['mode']}, model {target['model']}) {target['url']}",
            f"schema-valid        {_rate(target['schema_valid'])}   errors {target['errors']}",
            f"exact (all fields)  {_rate(target['exact'])}",
        ]
        for name, field in target["fields"].items():
            f1 = field["macro_f1"]
            shown = "n/a" if f1 is None else f"{f1:.3f}"
            lines.append(f"{name + ' accuracy':<20}{_rate(field['accuracy'])}   macro-F1 {shown}")
        lines += [
            f"output tokens       {_tokens(target)}",
            f"latency ms          {_latency(target)}",
        ]
        for name, field in target["fields"].items():
            lines += ["", f"confusion {name} (rows gold, columns predicted)"]
            lines += _text_matrix(field["confusion"])
        lines.append("")
    if summary["agreement"]:
        lines.append("== agreement between targets")
        for pair in summary["agreement"]:
            lines.append(f"{pair['first']} vs {pair['second']}: exact {_rate(pair['exact'])}")
            for name, value in pair["fields"].items():
                lines.append(f"    {name:<16}{_rate(value)}")
    return "\n".join(lines) + "\n"


def _text_matrix(confusion: Mapping[str, Any]) -> list[str]:
    columns = confusion["predicted"]
    width = max(len(label) for label in [*columns, *confusion["labels"]]) + 2
    lines = [" " * width + "".join(f"{column:>{width}}" for column in columns)]
    for name, row in zip(confusion["labels"], confusion["matrix"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{value:>{width}}" for value in row))
    return lines


def render_html(summary: Mapping[str, Any]) -> str:
    targets = summary["targets"]
    sections = [_overview(targets), _latency_section(targets)]
    sections += [_target_section(target) for target in targets]
    if summary["agreement"]:
        sections.append(_agreement_section(summary["agreement"]))
    sections.append(_rows_section(summary, [target["name"] for target in targets]))
    title = f"{summary['task']} evaluation: {summary['version']}"
    return h.page(title, _title(summary), sections)


def _overview(targets: Sequence[Mapping[str, Any]]) -> str:
    headers = ["target", "mode", "model", "schema-valid", "exact"]
    fields = list(targets[0]["fields"]) if targets else []
    headers += [f"{name} acc" for name in fields] + [f"{name} macro-F1" for name in fields]
    headers += ["tokens (mean)", "p50 ms", "p95 ms", "p99 ms"]
    rows = []
    for t in targets:
        row: list[object] = [t["name"], t["mode"], t["model"]]
        row += [f"{t['schema_valid']['rate']:.1%}", f"{t['exact']['rate']:.1%}"]
        row += [f"{t['fields'][name]['accuracy']['rate']:.1%}" for name in fields]
        row += [_f1(t["fields"][name]["macro_f1"]) for name in fields]
        tokens = t["output_tokens"]
        row.append(f"{tokens['mean']:.2f}" if tokens else None)
        row += [f"{t['latency_ms'][key]:.1f}" for key in ("p50", "p95", "p99")]
        rows.append(row)
    return h.section("Targets", h.table(headers, rows))


def _f1(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def _latency_section(targets: Sequence[Mapping[str, Any]]) -> str:
    series = [(key, [t["latency_ms"][key] for t in targets]) for key in ("p50", "p95", "p99")]
    chart = h.grouped_bars([t["name"] for t in targets], series, "ms")
    return h.section("Latency per request (client side)", chart)


def _target_section(target: Mapping[str, Any]) -> str:
    bars = [("schema-valid", target["schema_valid"]), ("exact (all fields)", target["exact"])]
    bars += [(f"{name} accuracy", f["accuracy"]) for name, f in target["fields"].items()]
    items = [(label, p["rate"], p["low"], p["high"]) for label, p in bars]
    parts = [h.interval_chart(items)]
    for name, field in target["fields"].items():
        confusion = field["confusion"]
        parts += [
            h.heading(f"{name}: confusion (macro-F1 {_f1(field['macro_f1']) or 'n/a'})"),
            h.heatmap(confusion["labels"], confusion["predicted"], confusion["matrix"]),
        ]
    parts.append(h.heading(f"output tokens: {_tokens(target)}; latency ms: {_latency(target)}"))
    title = f"{target['name']} ({target['mode']}, model {target['model']}, {target['url']})"
    return h.section(title, *parts)


def _agreement_section(pairs: Sequence[Mapping[str, Any]]) -> str:
    items = []
    for pair in pairs:
        names = f"{pair['first']} vs {pair['second']}"
        items.append((f"{names}: exact", *_triple(pair["exact"])))
        items += [(f"{names}: {field}", *_triple(p)) for field, p in pair["fields"].items()]
    rows = [[label, f"{rate:.1%}", f"[{low:.1%}, {high:.1%}]"] for label, rate, low, high in items]
    return h.section(
        "Agreement between targets (Wilson 95%)",
        h.interval_chart(items),
        h.table(["pair / field", "agreement", "interval"], rows),
    )


def _triple(p: Mapping[str, Any]) -> tuple[float, float, float]:
    return p["rate"], p["low"], p["high"]


def _rows_section(summary: Mapping[str, Any], names: Sequence[str]) -> str:
    """Examples where some target is wrong or targets disagree (the first 100)."""
    shown = []
    for row in summary["rows"]:
        answers = [row["predictions"][name]["labels"] for name in names]
        if any(answer != row["gold"] for answer in answers):
            shown.append(row)
    fields = list(summary["fields"])
    headers = ["id", "gold", *names]
    body = [
        [row["id"], _labels(row["gold"], fields)]
        + [_labels(row["predictions"][name]["labels"], fields) for name in names]
        for row in shown[:100]
    ]
    note = f"{len(shown)} of {len(summary['rows'])} examples"
    return h.section(f"Misses and disagreements ({note})", h.table(headers, body))


def _labels(labels: Mapping[str, str] | None, fields: Sequence[str]) -> str:
    return " / ".join(labels[name] for name in fields) if labels else "(invalid)"
