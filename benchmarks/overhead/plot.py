"""Draw the overhead benchmark as one SVG of grouped bar charts, written by hand (no plot deps).

Panels: requests/s by concurrency, p99 latency by concurrency (log scale), and what the proxies
add to streams (TTFT and inter-chunk gaps).
"""

import math
from collections.abc import Sequence
from html import escape

from loads import Point
from report import added, find, value_of

WIDTH, PANEL_H, TOP, LEFT, BOTTOM = 760, 260, 40, 70, 50
COLOURS = {
    "direct": "#8c8c8c", "nginx": "#4e79a7", "raw ASGI + aiohttp": "#f28e2b",
    "Python floor": "#76b7b2", "gateway": "#e15759",
}  # fmt: skip
Series = dict[str, list[float | None]]


def render_svg(points: Sequence[Point]) -> str:
    """The whole figure; missing points leave gaps, they do not fail."""
    http_c = sorted({p.concurrency for p in points if p.scenario == "http"})
    stream_c = sorted({p.concurrency for p in points if p.scenario == "stream"})
    paths = list(COLOURS)
    panels = [
        bars("requests/s (non-streaming)", [f"c={c}" for c in http_c], "req/s", False,
             {p: [value_of(find(points, "http", p, c), "rps") for c in http_c] for p in paths}),
        bars("p99 latency, ms (log scale)", [f"c={c}" for c in http_c], "ms", True,
             {p: [value_of(find(points, "http", p, c), "p99_ms") for c in http_c] for p in paths}),
        bars("added to streams, ms (vs direct)", _stream_groups(stream_c), "ms", False,
             {p: _stream_added(points, p, stream_c) for p in ("nginx", "gateway")}),
    ]  # fmt: skip
    height = len(panels) * (PANEL_H + TOP + BOTTOM)
    body = [f'<g transform="translate(0,{i * (PANEL_H + TOP + BOTTOM)})">{panel}</g>'
            for i, panel in enumerate(panels)]  # fmt: skip
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="11">'
        f'<rect width="100%" height="100%" fill="white"/>{"".join(body)}</svg>\n'
    )


def _stream_groups(stream_c: list[int]) -> list[str]:
    return [f"{label}, {c} str." for c in stream_c for label in ("TTFT p50", "gap p50", "gap p99")]


def _stream_added(points: Sequence[Point], path: str, stream_c: list[int]) -> list[float | None]:
    values: list[float | None] = []
    for c in stream_c:
        point = find(points, "stream", path, c)
        for field in ("ttft_p50_ms", "gap_p50_ms", "gap_p99_ms"):
            values.append(added(points, point, field))
    return values


def bars(title: str, groups: list[str], unit: str, log: bool, series: Series) -> str:
    """One panel: a bar per series in each group, value labels on top, a legend."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = max(values, default=1.0) or 1.0
    low = min((v for v in values if v > 0), default=0.01)
    scale = _log_scale(low, top) if log else _linear_scale(min(min(values, default=0.0), 0.0), top)
    plot_w = WIDTH - LEFT - 20
    slot = plot_w / max(len(groups), 1)
    bar_w = slot * 0.8 / max(len(series), 1)
    out = [f'<text x="{LEFT}" y="{TOP - 22}" font-size="13" font-weight="bold">'
           f"{escape(title)}</text>",
           f'<line x1="{LEFT}" y1="{TOP + PANEL_H}" x2="{WIDTH - 20}" y2="{TOP + PANEL_H}" '
           'stroke="black"/>']  # fmt: skip
    for g, group in enumerate(groups):
        x0 = LEFT + g * slot + slot * 0.1
        out.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{TOP + PANEL_H + 15}" '
                   f'text-anchor="middle">{escape(group)}</text>')  # fmt: skip
        for s, (name, vs) in enumerate(series.items()):
            if vs[g] is not None:
                out.append(_bar(x0 + s * bar_w, bar_w, float(vs[g] or 0.0), scale, name))
    for s, name in enumerate(series):
        x = LEFT + s * 150
        out.append(f'<rect x="{x}" y="{TOP - 14}" width="10" height="10" '
                   f'fill="{COLOURS.get(name, "#59a14f")}"/><text x="{x + 14}" y="{TOP - 5}">'
                   f"{escape(name)}</text>")  # fmt: skip
    out.append(f'<text x="{LEFT - 8}" y="{TOP + 10}" text-anchor="end">{_fmt(top)} {unit}</text>')
    return "".join(out)


def _bar(x: float, width: float, value: float, scale: "Scale", name: str) -> str:
    yvalue_of, y_zero = scale(value), scale(0.0)
    y, height = min(yvalue_of, y_zero), abs(y_zero - yvalue_of)
    colour = COLOURS.get(name, "#59a14f")
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.92:.1f}" height="{max(height, 1):.1f}" '
        f'fill="{colour}"/><text x="{x + width * 0.46:.1f}" y="{y - 3:.1f}" '
        f'text-anchor="middle" font-size="9">{_fmt(value)}</text>'
    )


class Scale:
    """Maps a value to a y pixel inside the panel."""

    def __init__(self, low: float, high: float, log: bool) -> None:
        self.low, self.high, self.log = low, high, log

    def __call__(self, value: float) -> float:
        if self.log:
            value = math.log10(value) if value > 0 else self.low
        share = (value - self.low) / ((self.high - self.low) or 1.0)
        return TOP + PANEL_H * (1.0 - min(max(share, 0.0), 1.0))


def _linear_scale(low: float, high: float) -> Scale:
    return Scale(low, high * 1.1, False)


def _log_scale(low: float, high: float) -> Scale:
    return Scale(math.log10(low / 2), math.log10(high * 1.5), True)


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"
