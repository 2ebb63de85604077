"""The SVG charts of the gateway's HTML reports (`gateway.render.html`): bars with intervals,
grouped and signed bars, lines with bands. Inline SVG, no scripts; labels are escaped.

Example::

    chart = interval_chart([("exact", proportion(87, 100))])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from gateway.stats import Proportion

PALETTE = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2")
GRID = {"stroke": "#e4e7eb"}
INK = "#1f2933"


def interval_chart(items: Sequence[tuple[str, Proportion]], width: int = 640) -> str:
    """Horizontal bars for proportions with their interval as a whisker: (label, proportion)."""
    label_width, bar_height, gap = 220, 16, 8
    scale = width - label_width - 60
    height = len(items) * (bar_height + gap) + 24
    parts = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = label_width + tick * scale
        parts.append(_el("line", {"x1": x, "x2": x, "y1": 0, "y2": height - 20, **GRID}))
        parts.append(_el("text", {"x": x, "y": height - 6, "text-anchor": "middle"}, f"{tick:.0%}"))
    for index, (label, share) in enumerate(items):
        y = index * (bar_height + gap)
        bar = {"x": label_width, "y": y, "width": share.rate * scale, "height": bar_height, "rx": 2}
        whisker = {"x1": label_width + share.low * scale, "x2": label_width + share.high * scale}
        parts += [
            _el("text", {"x": label_width - 8, "y": y + 12, "text-anchor": "end"}, label),
            _el("rect", {**bar, "fill": PALETTE[index % len(PALETTE)], "opacity": 0.75}),
            _el("line", {**whisker, "y1": y + 8, "y2": y + 8, "stroke": INK, "stroke-width": 1.5}),
            _el("text", {"x": label_width + scale + 8, "y": y + 12}, f"{share.rate:.1%}"),
        ]
    return _svg(width, height, parts)


def grouped_bars(
    groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], unit: str
) -> str:
    """Vertical bars: one group per name in `groups`, one bar per series (e.g. p50/p95/p99 per
    target), with a legend."""
    width, height, left, top = 640, 220, 56, 10
    plot = height - top - 28
    peak = max((value for _, values in series for value in values), default=0.0) or 1.0
    group_width = (width - left - 10) / max(len(groups), 1)
    bar = min(28.0, group_width * 0.8 / max(len(series), 1))
    parts = [_el("text", {"x": 4, "y": 12}, unit)]
    for step in range(5):
        y = top + plot - plot * step / 4
        parts.append(_el("line", {"x1": left, "x2": width - 10, "y1": y, "y2": y, **GRID}))
        label = f"{peak * step / 4:.3g}"
        parts.append(_el("text", {"x": left - 6, "y": y + 4, "text-anchor": "end"}, label))
    for g, group in enumerate(groups):
        x0 = left + g * group_width + (group_width - bar * len(series)) / 2
        for s, (name, values) in enumerate(series):
            h = plot * values[g] / peak
            box = {"x": x0 + s * bar, "y": top + plot - h, "width": bar - 2, "height": h}
            tip = _el("title", {}, f"{group} {name}: {values[g]:.1f} {unit}")
            fill = {"fill": PALETTE[s % len(PALETTE)], "rx": 2}
            parts.append(_el("rect", {**box, **fill}, children=tip))
        middle = {"x": left + (g + 0.5) * group_width, "y": height - 8, "text-anchor": "middle"}
        parts.append(_el("text", middle, group))
    return _legend([name for name, _ in series]) + _svg(width, height, parts)


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    x_label: str,
    y_label: str,
    percent: bool = False,
    bands: Sequence[Sequence[tuple[float, float, float]]] = (),
    reference: tuple[str, float] | None = None,
    x_ticks: Sequence[tuple[float, str]] = (),
) -> str:
    """Lines through (x, y) points, one per series, with a legend. `bands[i]`: (x, low, high)
    shaded around series i; `reference`: a dashed horizontal line with its label; `x_ticks`:
    (x, label), five numbers when empty; `percent`: y is a rate, shown from a round floor to
    100%."""
    width, height, left, right, top, bottom = 640, 250, 56, 16, 24, 40
    xs = [x for _, points in series for x, _ in points] or [0.0, 1.0]
    ys = [y for _, points in series for _, y in points]
    ys += [value for band in bands for _, low, high in band for value in (low, high)]
    ys += [reference[1]] if reference else []
    x0, x1 = min(xs), max(xs)
    x0, x1 = (x0 - 1, x1 + 1) if x0 == x1 else (x0, x1)
    y0 = min(0.9, math.floor(min(ys, default=0.0) * 10) / 10) if percent else 0.0
    y1 = 1.0 if percent else (max(ys, default=0.0) or 1.0)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [_el("text", {"x": 4, "y": 10}, y_label)]
    parts.append(_el("text", {"x": width - right, "y": height - 4, "text-anchor": "end"}, x_label))
    for step in range(5):
        y = y0 + (y1 - y0) * step / 4
        text = f"{y:.0%}" if percent else f"{y:.3g}"
        parts.append(
            _el("line", {"x1": left, "x2": width - right, "y1": sy(y), "y2": sy(y), **GRID})
        )
        parts.append(_el("text", {"x": left - 6, "y": sy(y) + 4, "text-anchor": "end"}, text))
    ticks = x_ticks or [(x0 + (x1 - x0) * step / 4, "") for step in range(5)]
    for x, text in ticks:
        label = {"x": sx(x), "y": height - 22, "text-anchor": "middle"}
        parts.append(_el("text", label, text or f"{x:.3g}"))
    for index, band in enumerate(bands):
        outline = [(sx(x), sy(high)) for x, _, high in band]
        outline += [(sx(x), sy(low)) for x, low, _ in reversed(band)]
        fill = {"fill": PALETTE[index % len(PALETTE)], "opacity": 0.15}
        parts.append(_el("polygon", {"points": _points(outline), **fill}))
    if reference:
        name, value = reference
        line = {"x1": left, "x2": width - right, "y1": sy(value), "y2": sy(value)}
        parts.append(_el("line", {**line, "stroke": INK, "stroke-dasharray": "5 4"}))
        parts.append(
            _el("text", {"x": width - right - 4, "y": sy(value) - 5, "text-anchor": "end"}, name)
        )
    for index, (name, points) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        path = _points([(sx(x), sy(y)) for x, y in points])
        parts.append(
            _el("polyline", {"points": path, "fill": "none", "stroke": color, "stroke-width": 2})
        )
        for x, y in points:
            tip = _el("title", {}, f"{name}: {y:.1%}" if percent else f"{name}: {x:.3g}, {y:.3g}")
            dot = {"cx": sx(x), "cy": sy(y), "r": 2.5, "fill": color}
            parts.append(_el("circle", dot, children=tip))
    return _legend([name for name, _ in series]) + _svg(width, height, parts)


def signed_bars(items: Sequence[tuple[str, float]], unit: str) -> str:
    """Horizontal bars either side of zero (e.g. candidate minus primary latency): below zero
    green, above red, the value printed at the right."""
    label_width, bar_height, gap, width = 150, 16, 8, 640
    half = (width - label_width - 90) / 2
    zero = label_width + half
    span = max((abs(value) for _, value in items), default=0.0) or 1.0
    height = len(items) * (bar_height + gap) + 24
    parts = [_el("line", {"x1": zero, "x2": zero, "y1": 0, "y2": height - 20, "stroke": INK})]
    for value in (-span, 0.0, span):
        tick = {"x": zero + value / span * half, "y": height - 6, "text-anchor": "middle"}
        parts.append(_el("text", tick, f"{value:+.3g}" if value else "0"))
    for index, (label, value) in enumerate(items):
        y = index * (bar_height + gap)
        size = abs(value) / span * half
        box = {
            "x": zero if value >= 0 else zero - size,
            "y": y,
            "width": size,
            "height": bar_height,
        }
        parts += [
            _el("text", {"x": label_width - 8, "y": y + 12, "text-anchor": "end"}, label),
            _el("rect", {**box, "rx": 2, "fill": "#dc2626" if value > 0 else "#059669"}),
            _el(
                "text", {"x": width - 4, "y": y + 12, "text-anchor": "end"}, f"{value:+.1f} {unit}"
            ),
        ]
    return _svg(width, height, parts)


def _legend(names: Sequence[str]) -> str:
    return (
        "<div class=legend>"
        + "".join(
            f"<span><i style='background:{PALETTE[s % len(PALETTE)]}'></i>{escape(name)}</span>"
            for s, name in enumerate(names)
        )
        + "</div>"
    )


def _points(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _el(tag: str, attributes: dict[str, object], text: str = "", children: str = "") -> str:
    """One SVG element with quoted attributes (valid XML as well as HTML): `text` is escaped,
    `children` is markup built with this same function."""
    rendered = "".join(f' {name}="{_value(value)}"' for name, value in attributes.items())
    return f"<{tag}{rendered}>{escape(text)}{children}</{tag}>"


def _value(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else escape(str(value))


def _svg(width: int, height: int, parts: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">{"".join(parts)}</svg>'
    )
