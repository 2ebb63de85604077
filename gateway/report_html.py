"""Building blocks of the gateway's HTML reports: one self-contained file, inline CSS and SVG.

No scripts and no external assets, so a report opens from disk, in a mail attachment or a CI
artifact viewer alike. Every function returns escaped HTML text; callers pass plain values.

Example::

    html = page("Eval", "tagger-v1", [section("Accuracy", interval_chart([("a", .9, .8, .95)]))])
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
margin:0;background:#f5f7fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
h3{font-size:14px;margin:16px 0 6px;color:#52606d}
.sub{color:#52606d;margin-bottom:20px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:#52606d;font-weight:600}
td.cell{text-align:center;min-width:34px}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.muted{color:#9aa5b1}.bad{color:#dc2626}
svg text{font:12px system-ui,sans-serif;fill:#1f2933}
"""


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    """A whole HTML document."""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body><main><h1>{escape(title)}</h1>"
        f"<div class=sub>{escape(subtitle)}</div>{''.join(sections)}</main></body></html>\n"
    )


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def heading(text: str) -> str:
    return f"<h3>{escape(text)}</h3>"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table of plain values (escaped); `None` shows as a muted dash."""
    head = "".join(f"<th>{escape(str(header))}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    return "<span class=muted>&ndash;</span>" if value is None else escape(str(value))


def heatmap(rows: Sequence[str], columns: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """A confusion matrix: rows gold, columns predicted; the diagonal green, the rest red."""
    peak = max((value for row in matrix for value in row), default=0) or 1
    head = "<th>gold \\ predicted</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns)
    lines = []
    for name, values in zip(rows, matrix, strict=True):
        cells = []
        for column, value in zip(columns, values, strict=True):
            hue = "5,150,105" if column == name else "220,38,38"
            alpha = 0.08 + 0.72 * value / peak if value else 0.0
            cells.append(
                f"<td class=cell style='background:rgba({hue},{alpha:.2f})'>{value or ''}</td>"
            )
        lines.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def interval_chart(items: Sequence[tuple[str, float, float, float]], width: int = 640) -> str:
    """Horizontal bars for rates in [0, 1] with their interval as a whisker: (label, rate,
    low, high)."""
    label_width, bar_height, gap = 220, 16, 8
    scale = width - label_width - 60
    height = len(items) * (bar_height + gap) + 24
    parts = [_axis(label_width, scale, height - 20, ticks=(0, 0.25, 0.5, 0.75, 1.0), percent=True)]
    for index, (label, rate, low, high) in enumerate(items):
        y = index * (bar_height + gap)
        color = PALETTE[index % len(PALETTE)]
        parts.append(
            f"<text x={label_width - 8} y={y + 12} text-anchor=end>{escape(label)}</text>"
            f"<rect x={label_width} y={y} width={rate * scale:.1f} height={bar_height} "
            f"fill={color} opacity=0.75 rx=2></rect>"
            f"<line x1={label_width + low * scale:.1f} x2={label_width + high * scale:.1f} "
            f"y1={y + 8} y2={y + 8} stroke=#1f2933 stroke-width=1.5></line>"
            f"<text x={label_width + scale + 8} y={y + 12}>{rate:.1%}</text>"
        )
    return _svg(width, height, parts)


def grouped_bars(
    groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], unit: str
) -> str:
    """Vertical bars: one group per name in `groups`, one bar per series (e.g. p50/p95/p99 per
    target), with a legend."""
    width, height, left, bottom = 640, 220, 56, 28
    peak = max((value for _, values in series for value in values), default=0.0) or 1.0
    group_width = (width - left - 10) / max(len(groups), 1)
    bar = min(28.0, group_width * 0.8 / max(len(series), 1))
    plot = height - bottom - 10
    parts = [_axis_vertical(left, width, plot, peak, unit)]
    for g, group in enumerate(groups):
        x0 = left + g * group_width + (group_width - bar * len(series)) / 2
        for s, (_, values) in enumerate(series):
            value = values[g]
            h = plot * value / peak
            parts.append(
                f"<rect x={x0 + s * bar:.1f} y={10 + plot - h:.1f} width={bar - 2:.1f} "
                f"height={h:.1f} fill={PALETTE[s % len(PALETTE)]} rx=2>"
                f"<title>{escape(group)} {escape(series[s][0])}: {value:.1f} {unit}</title></rect>"
            )
        parts.append(
            f"<text x={left + (g + 0.5) * group_width:.1f} y={height - 8} "
            f"text-anchor=middle>{escape(group)}</text>"
        )
    legend = "".join(
        f"<span><i style='background:{PALETTE[s % len(PALETTE)]}'></i>{escape(name)}</span>"
        for s, (name, _) in enumerate(series)
    )
    return f"<div class=legend>{legend}</div>" + _svg(width, height, parts)


def _axis(x: int, scale: float, y: int, ticks: Sequence[float], percent: bool) -> str:
    lines = []
    for tick in ticks:
        px = x + tick * scale
        text = f"{tick:.0%}" if percent else f"{tick:g}"
        lines.append(
            f"<line x1={px:.1f} x2={px:.1f} y1=0 y2={y} stroke=#e4e7eb></line>"
            f"<text x={px:.1f} y={y + 14} text-anchor=middle class=muted>{text}</text>"
        )
    return "".join(lines)


def _axis_vertical(left: int, width: int, plot: float, peak: float, unit: str) -> str:
    lines = []
    for step in range(5):
        value = peak * step / 4
        y = 10 + plot - plot * step / 4
        lines.append(
            f"<line x1={left} x2={width - 10} y1={y:.1f} y2={y:.1f} stroke=#e4e7eb></line>"
            f"<text x={left - 6} y={y + 4:.1f} text-anchor=end>{value:.3g}</text>"
        )
    lines.append(f"<text x=4 y=12>{escape(unit)}</text>")
    return "".join(lines)


def _svg(width: int, height: int, parts: Sequence[str]) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width={width} height={height} "
        f"viewBox='0 0 {width} {height}' role=img>{''.join(parts)}</svg>"
    )
