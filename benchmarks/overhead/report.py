"""Turn measured points into the overhead benchmark's tables, targets and summary.

Pure functions over ``Point`` lists, so they are checked without servers. "Added" is always the
path's figure minus the direct-to-upstream figure at the same load, from the same run.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loads import BurstResult, Point, StreamResult

from benchmarks.upstream_client.wrkload import WrkResult

Row = list[str]

# The Python floor's polling limit: the gateway's default,
# backends.transport.busy_poll.AUTO_LIMIT_US (not imported: with PYTHONPATH at an older commit's
# worktree, that `gateway` may not have it).
BUSY_POLL_US = 1000
BUSY_POLL = f"busy poll {BUSY_POLL_US} µs"
POLL_OFF = "busy poll off"  # the gateway rows with GATEWAY_BUSY_POLL_US=0
POOL = "gateway, pool of 3"  # the gateway whose backend is a replica pool of three upstreams
REFERENCE = "(reference)"  # the limit of a row shown beside a target, judged by none
ROUTES = 10  # routes configured in the many-routes rows (issue 21: lookup stays O(1))
ROUTED = f"gateway, {ROUTES} routes"
SYNCHRONISED, CADENCE = "synchronised", "cadence"  # the scenarios of streams in engine steps
SHADOWED = "gateway, shadow 100%"
SHADOWED_CHILD = "gateway, shadow 100%, read in a child"  # GATEWAY_SHADOW_READER=process
# Direct while the candidate's upstream streams the same load to a client on the proxy's core:
# what shadowing adds to the load core with no proxy at all, the baseline of the shadowed rows.
BESIDE_CANDIDATE = "direct, candidate streaming too"
# The unshadowed gateway while a plain client on its core reads the candidate's streams at the
# shadow reader's priority: the least any shadow reading the candidate on that core can cost.
SHADOW_FLOOR = "gateway, a reader of the candidate beside"


@dataclass(frozen=True)
class Target:
    """One target of issues 6 and 21; ``measured`` is None when its point is missing."""

    name: str
    limit: str
    measured: float | None
    unit: str
    met: bool | None
    doubles: str | None = None  # the limit is twice this row's measure (issue 23's shadow)

    @property
    def verdict(self) -> str:
        if self.limit == REFERENCE:
            return "-"
        return {True: "PASS", False: "MISS", None: "n/a"}[self.met]


def find(points: Sequence[Point], scenario: str, path: str, concurrency: int) -> Point | None:
    for point in points:
        if (point.scenario, point.path, point.concurrency) == (scenario, path, concurrency):
            return point
    return None


def added(
    points: Sequence[Point], point: Point | None, field: str, over: str = "direct"
) -> float | None:
    """``field`` of ``point`` minus the `over` path's at the same scenario and load."""
    if point is None:
        return None
    direct = find(points, point.scenario, over, point.concurrency)
    mine, base = value_of(point, field), value_of(direct, field)
    return None if mine is None or base is None else round(mine - base, 4)


def targets(points: Sequence[Point], path: str = "gateway") -> list[Target]:
    """The targets of issue 6, measured on the gateway rows (one process, one core), and the
    first three again with ROUTES routes configured (issue 21); or on the rows of `path` (the
    pool of three), where the shadow, polling and routes rows do not apply."""
    c1 = find(points, "http", path, 1)
    c1_sleeping = find(points, "http", f"gateway, {POLL_OFF}", 1)
    one_sleeping = find(points, "stream", f"gateway, {POLL_OFF}", 1)
    c64 = find(points, "http", path, 64)
    routed_c1, routed_c64 = (find(points, "http", ROUTED, c) for c in (1, 64))
    shadow = find(points, "shadow", "gateway, shadow 100%", 64)
    one = find(points, "stream", path, 1)
    gateway_streams = [p for p in points if p.scenario == "stream" and p.path == path]
    many = max(gateway_streams, key=lambda p: p.concurrency, default=None)
    n = many.concurrency if many else 0
    rows = [
        ("added latency at c=1, p50", "<= 0.30 ms", added(points, c1, "p50_ms"), "ms"),
        (f"same, {POLL_OFF}", REFERENCE, added(points, c1_sleeping, "p50_ms"), "ms"),
        ("requests/s at c=64", ">= 6,000", value_of(c64, "rps"), "req/s"),
        ("p99 at c=64", "<= 25 ms", value_of(c64, "p99_ms"), "ms"),
        ("requests/s at c=64, all shadowed", ">= 3,000", value_of(shadow, "rps"), "req/s"),
        # The same targets with ROUTES routes configured (issue 21).
        (f"added latency at c=1, p50, {ROUTES} routes", "<= 0.30 ms",
         added(points, routed_c1, "p50_ms"), "ms"),
        (f"requests/s at c=64, {ROUTES} routes", ">= 6,000", value_of(routed_c64, "rps"),
         "req/s"),
        (f"p99 at c=64, {ROUTES} routes", "<= 25 ms", value_of(routed_c64, "p99_ms"), "ms"),
        ("added TTFT p50, 1 stream", "<= 0.5 ms", added(points, one, "ttft_p50_ms"), "ms"),
        (f"same, {POLL_OFF}", REFERENCE, added(points, one_sleeping, "ttft_p50_ms"), "ms"),
        (
            f"added gap p99, {n} streams",
            "<= 5 ms",
            added(points, many, "gap_p99_ms"),
            "ms",
        ),
        (f"gateway RSS, {n} streams", "<= 200 MB", many.rss_mb if many else None, "MiB"),
    ]  # fmt: skip
    if path != "gateway":
        rows = [
            row
            for row in rows
            if row[1] != REFERENCE and "shadowed" not in row[0] and f"{ROUTES} routes" not in row[0]
        ]
    return [
        Target(name, limit, value, unit, _meets(limit, value)) for name, limit, value, unit in rows
    ]


def burst_targets(points: Sequence[Point]) -> list[Target]:
    """The targets of issue 23, on streams in engine steps (one gateway process, one core).

    The shadowed rows' added figure is over direct with the candidate's upstream streaming too
    (`BESIDE_CANDIDATE`) when the run has that point: the second upstream shares the load core
    with the client, which costs direct itself a few ms with no proxy at all. So is the shadow's
    floor (`SHADOW_FLOOR`), shown beside them for reference when measured."""
    rows: list[Target] = []
    modes = ((SYNCHRONISED, "delay_p99_ms", 5.0), (CADENCE, "gap_p99_ms", 1.0))
    for scenario, field, limit in modes:
        plain, shadowed = _burst_pair(points, scenario)
        n = plain.concurrency if plain else 0
        child = find(points, scenario, SHADOWED_CHILD, n) if plain else None
        what = "chunk delay" if field.startswith("delay") else "gap"
        base = BESIDE_CANDIDATE if find(points, scenario, BESIDE_CANDIDATE, n) else "direct"
        mine = added(points, plain, field)
        unshadowed = f"{scenario}, {n} streams: added {what} p99"
        rows.append(_target(unshadowed, f"<= {limit:g} ms", mine))
        for label, point in (("", shadowed), (", read in a child", child)):
            theirs = added(points, point, field, base)
            rows.append(twice(f"same, every stream shadowed{label}", theirs, unshadowed, mine))
        floor = find(points, scenario, SHADOW_FLOOR, n) if plain else None
        if floor is not None:  # judged by none: what reading the candidate costs by itself
            least = added(points, floor, field, base)
            rows.append(_target("same, unshadowed, a plain reader beside", REFERENCE, least))
        if scenario == CADENCE:
            spoilable = (("", plain), (", shadowed", shadowed), (", read in a child", child))
            for label, point in spoilable:
                value = _spoiled(point)
                rows.append(_target(f"chunks coalesced or reordered{label}", "<= 0", value, ""))
        rows.append(_target(f"gateway RSS, {scenario}", REFERENCE, plain and plain.rss_mb, "MiB"))
    return rows


def twice(name: str, measured: float | None, of: str, unshadowed: float | None) -> Target:
    """A shadowed row: met when `measured` is at most two times the `unshadowed` figure."""
    bound = None if unshadowed is None else 2 * unshadowed
    met = None if bound is None or measured is None else measured <= bound
    shown = "-" if bound is None else fmt_ms(bound)
    return Target(name, f"<= 2 x unshadowed ({shown})", measured, "ms", met, doubles=of)


def over_rounds(rounds: Sequence[Sequence[Target]]) -> list[Target]:
    """Each target's median over rounds of the same measurement, judged again: a doubled
    row's bound is two times the median of the row it doubles; a count that must be zero
    (chunks coalesced or reordered) is judged on its worst round."""
    merged: list[Target] = []
    for same in zip(*rounds, strict=True):
        first = same[0]
        assert all(t.name == first.name for t in same), [t.name for t in same]
        values = [t.measured for t in same if t.measured is not None]
        pick = max if first.limit == "<= 0" else statistics.median
        value = round(pick(values), 4) if len(values) == len(same) else None
        if first.doubles is None:
            merged.append(_target(first.name, first.limit, value, first.unit))
            continue
        doubled = next(t for t in reversed(merged) if t.name == first.doubles)
        merged.append(twice(first.name, value, first.doubles, doubled.measured))
    return merged


def rounds_table(per_round: Sequence[Sequence[Target]], merged: Sequence[Target]) -> str:
    """Markdown: each target's figure in every round, then over the rounds, with its verdict."""
    header = ["target (issue 23)", "limit, over rounds"]
    header += [f"round {n}" for n in range(1, len(per_round) + 1)] + ["over rounds", "verdict"]
    rows = [
        [t.name, t.limit, *(_num(r[i].measured, t.unit) for r in per_round),
         _num(t.measured, t.unit), t.verdict]
        for i, t in enumerate(merged)
    ]  # fmt: skip
    return _table(header, rows)


def _burst_pair(points: Sequence[Point], scenario: str) -> tuple[Point | None, Point | None]:
    plain = [p for p in points if p.scenario == scenario and p.path == "gateway"]
    if not plain:
        return None, None
    return plain[0], find(points, scenario, SHADOWED, plain[0].concurrency)


def _spoiled(point: Point | None) -> float | None:
    if point is None or not isinstance(point.result, BurstResult):
        return None
    return float(point.result.coalesced + point.result.reordered)


def _target(name: str, limit: str, value: float | None, unit: str = "ms") -> Target:
    return Target(name, limit, value, unit, _meets(limit, value))


def _meets(limit: str, value: float | None) -> bool | None:
    """Whether ``value`` satisfies a limit written as "<= 0.30 ms" or ">= 6,000"."""
    if value is None or limit == REFERENCE:
        return None
    sign, bound = limit.split()[:2]
    number = float(bound.replace(",", ""))
    return value <= number if sign == "<=" else value >= number


def max_rps(points: Sequence[Point]) -> dict[str, float]:
    """Highest requests/s each non-streaming path reached over the concurrencies."""
    best: dict[str, float] = {}
    for point in points:
        if point.scenario == "http" and isinstance(point.result, WrkResult):
            best[point.path] = max(best.get(point.path, 0.0), point.result.rps)
    return best


def render(points: Sequence[Point]) -> str:
    """Markdown: non-streaming, streaming, shadow and workers, streams in engine steps, the
    targets of each issue; noisy points get a †. Tables without rows are left out."""
    http = [p for p in points if p.scenario == "http"]
    streams = [p for p in points if p.scenario == "stream"]
    bursts = [p for p in points if p.scenario in (SYNCHRONISED, CADENCE)]
    reference = [p for p in [find(points, "http", "gateway", 64)] if p is not None]
    extra = reference + [p for p in points if p.scenario in ("shadow", "workers")]
    parts = [
        _table(["path (proxy on core 1)", "conns", "req/s", "p50", "p99", "added p50",
                "added p99", "proxy CPU", "others' CPU"], [_http_row(points, p) for p in http]),
        _table(["path (proxy on core 1)", "streams", "TTFT p50", "TTFT p99", "added TTFT p50",
                "gap p50", "gap p99", "added gap p50", "added gap p99", "proxy RSS",
                "proxy CPU", "client CPU", "others' CPU"],
               [_stream_row(points, p) for p in streams]),
        _table(["gateway at c=64", "req/s", "p50", "p99", "added p50", "gateway CPU",
                "others' CPU", "note"], [_extra_row(points, p) for p in extra]),
        _table(BURST_HEADER, [_burst_row(points, p) for p in bursts]),
    ]  # fmt: skip
    if http or streams:
        parts.append(_verdicts("target (issues 6, 21)", targets(points)))
    if any(p.path == POOL for p in points):
        parts.append(_verdicts(f"target (issue 6), {POOL}", targets(points, POOL)))
    if bursts:
        parts.append(_verdicts("target (issue 23)", burst_targets(points)))
    parts = [part for part in parts if part.count("\n") > 1]
    if any(p.noisy for p in points):
        parts.append("† other processes used more than 10 % of a core during this point.")
    return "\n\n".join(parts)


def _verdicts(title: str, rows: list[Target]) -> str:
    return _table(
        [title, "limit", "measured", "verdict"],
        [[t.name, t.limit, _num(t.measured, t.unit), t.verdict] for t in rows],
    )


def _http_row(points: Sequence[Point], p: Point) -> Row:
    r = p.result
    assert isinstance(r, WrkResult)
    return [_label(p), str(p.concurrency), f"{r.rps:,.0f}", fmt_ms(r.p50_ms), fmt_ms(r.p99_ms),
            _added(added(points, p, "p50_ms")), _added(added(points, p, "p99_ms")),
            _pct(p.proxy_cpu_pct), _pct(p.other_cpu_pct)]  # fmt: skip


def _stream_row(points: Sequence[Point], p: Point) -> Row:
    r = p.result
    assert isinstance(r, StreamResult)
    return [_label(p), str(p.concurrency), _ms(r.ttft_p50_ms), _ms(r.ttft_p99_ms),
            _added(added(points, p, "ttft_p50_ms")), _ms(r.gap_p50_ms), _ms(r.gap_p99_ms),
            _added(added(points, p, "gap_p50_ms")), _added(added(points, p, "gap_p99_ms")),
            _num(p.rss_mb, "MiB"), _pct(p.proxy_cpu_pct), _pct(r.client_cpu_pct),
            _pct(p.other_cpu_pct)]  # fmt: skip


BURST_HEADER = [
    "mode", "path (proxy on core 1)", "streams", "delay p50", "delay p99", "added delay p50",
    "added delay p99", "gap p50", "gap p99", "added gap p99", "coalesced", "reordered",
    "TTFT p50", "proxy RSS", "proxy CPU", "CPU per chunk", "client CPU", "others' CPU",
]  # fmt: skip


def _burst_row(points: Sequence[Point], p: Point) -> Row:
    r = p.result
    assert isinstance(r, BurstResult)
    per_chunk = "-" if r.cpu_us_per_chunk is None else f"{r.cpu_us_per_chunk:.1f} µs"
    return [p.scenario, _label(p), str(p.concurrency), _ms(r.delay_p50_ms), _ms(r.delay_p99_ms),
            _added(added(points, p, "delay_p50_ms")), _added(added(points, p, "delay_p99_ms")),
            _ms(r.gap_p50_ms), _ms(r.gap_p99_ms), _added(added(points, p, "gap_p99_ms")),
            str(r.coalesced), str(r.reordered), _ms(r.ttft_p50_ms), _num(p.rss_mb, "MiB"),
            _pct(p.proxy_cpu_pct), per_chunk, _pct(r.client_cpu_pct),
            _pct(p.other_cpu_pct)]  # fmt: skip


def _extra_row(points: Sequence[Point], p: Point) -> Row:
    r = p.result
    assert isinstance(r, WrkResult)
    direct = find(points, "http", "direct", p.concurrency)
    base = value_of(direct, "p50_ms")
    extra_p50 = None if base is None else round(r.p50_ms - base, 4)
    notes = [f"{k.replace('_', ' ')} {v:,.0f}" for k, v in p.extra.items()]
    if p.proxy_cpu_pct:  # throughput per core the gateway actually got: the scaling measure
        notes.insert(0, f"{r.rps / (p.proxy_cpu_pct / 100.0):,.0f} req/s per gateway core")
    note = "; ".join(notes)
    label = (
        _label(p).replace("gateway", "gateway, 1 worker on core 1", 1)
        if p.scenario == "http"
        else _label(p)
    )
    return [label, f"{r.rps:,.0f}", fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), _added(extra_p50),
            _pct(p.proxy_cpu_pct), _pct(p.other_cpu_pct), note]  # fmt: skip


def summary(points: Sequence[Point]) -> dict[str, Any]:
    """The headline numbers and the target verdicts, for the JSON report."""
    return {
        "max_rps": max_rps(points),
        "targets": [{**vars(t), "verdict": t.verdict} for t in targets(points)],
        "burst_targets": [{**vars(t), "verdict": t.verdict} for t in burst_targets(points)],
        "pool_targets": [{**vars(t), "verdict": t.verdict} for t in targets(points, POOL)],
    }


def value_of(point: Point | None, field: str) -> float | None:
    if point is None:
        return None
    value = getattr(point.result, field, None)
    return float(value) if isinstance(value, int | float) else None


def _table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _label(point: Point) -> str:
    return point.path + (" †" if point.noisy else "")


def fmt_ms(ms: float) -> str:
    """Three significant digits, in seconds from 1 s up: 0.019 ms, 16.2 ms, 146 ms, 1.47 s."""
    if abs(ms) >= 1000:
        return f"{ms / 1000:.3g} s"
    return f"{ms:.3f} ms" if abs(ms) < 1 else f"{ms:.3g} ms"


def _ms(value: float | None) -> str:
    return "-" if value is None else fmt_ms(value)


def _added(value: float | None) -> str:
    return "-" if value is None else ("+" if value >= 0 else "") + fmt_ms(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"
