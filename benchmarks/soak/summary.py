"""From results and samples to the soak report: rows over time, faults, and the verdict.

Pure functions (no I/O), so they are checked without servers. A window's counts are by the time
a request was due (``sent``) or ended (every outcome); its gauges are those sampled at its end.
"""

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.soak.chores import Reload
from benchmarks.soak.gauges import Sample
from benchmarks.soak.load import Result
from benchmarks.soak.plan import FAULTS, NO_FAULT
from benchmarks.soak.slow import SlowResult

OUTCOMES = ("2xx", "stream_error", "stream_cut", "4xx", "5xx", "client_error", "timeout")
GAUGES = ("rss_mb", "fds", "non_socket_fds", "tcp", "tcp_upstream", "close_wait", "in_flight",
          "client_connections", "limits_shared", "others_cpu_pct")  # fmt: skip
OUTAGE = "upstream down or recovering"
LATE_S = 2.0  # a slow client answered later than this past its timeout was held too long
# Growth from the first quarter to the last a full run may show: a leak of a kilobyte a request
# would add about 35 MB (some 40 %) over a full run's 36,000, of a kilobyte a slow connection
# some 6 MB; a high-water mark of a busier moment (more client connections) adds a few %.
FLAT_RSS_PCT = 10.0
FLAT_FDS = 2.0  # descriptors that are not sockets: a leak of files or pipes would grow them
Span = tuple[float, float]


@dataclass(frozen=True)
class Chores:
    """What ran beside the load: slow clients, reloads, Redis outages, the client timeouts."""

    slow: Sequence[SlowResult]
    reloads: Sequence[Reload]
    redis_down: list[Span]
    timeouts: dict[str, float]  # by what a slow client trickles: head, body
    end: float  # when the slow clients stopped (monotonic s)
    lag: Sequence[tuple[float, float]]  # (when, seconds) the client's own loop woke late


def windows(
    results: Sequence[Result],
    ends: Sequence[Sample],
    start: float,
    width: float,
    down: list[Span],
    chores: Chores,
) -> list[dict[str, Any]]:
    """One row per window; ``ends[k]`` was sampled at the end of window ``k``."""
    rows = []
    for k, sample in enumerate(ends):
        low, high = start + k * width, start + (k + 1) * width
        ended = [r for r in results if low <= r.done < high]
        clean = [r.latency_ms for r in ended if r.outcome == "2xx" and r.fault in NO_FAULT]
        row: dict[str, Any] = {"t_s": round((k + 1) * width, 1)}
        due = [r for r in results if low <= r.sent < high]
        row["sent"] = len(due)
        row["send_lag_p99_ms"] = percentile([r.lag * 1000.0 for r in due], 99)
        row |= {name: sum(r.outcome == name for r in ended) for name in OUTCOMES}
        row |= {"p50_ms": percentile(clean, 50), "p99_ms": percentile(clean, 99)}
        row["max_ms"] = round(max((r.latency_ms for r in ended), default=0.0), 1)
        row["upstream_down"] = any(a < high and b > low for a, b in down)
        row["redis_down"] = any(a < high and b > low for a, b in chores.redis_down)
        row["slow_408"] = sum(s.status == 408 and low <= s.answered < high for s in chores.slow)
        row["reloads"] = sum(low <= r.at < high for r in chores.reloads)
        rows.append(row | {name: getattr(sample, name) for name in GAUGES})
    return rows


def recoveries(results: Sequence[Result], down: list[Span]) -> list[Span]:
    """Each outage from the crash until the first clean answer due after the restart."""
    spans = []
    for crashed, restarted in down:
        clean = (r.sent for r in results if r.sent >= restarted and r.outcome == "2xx")
        spans.append((crashed, min(clean, default=math.inf)))
    return spans


def faults(results: Sequence[Result], outages: list[Span]) -> dict[str, dict[str, Any]]:
    """Per fault: how its requests ended; those due during an outage (``recoveries``) apart."""
    expected = {fault.name: fault.expected for fault in FAULTS}
    groups: dict[str, list[Result]] = {name: [] for name in [*expected, OUTAGE]}
    for result in results:
        during = any(a <= result.sent < b for a, b in outages)
        groups[OUTAGE if during else result.fault].append(result)
    table = {}
    for name, group in groups.items():
        outcomes = Counter(r.outcome for r in group)
        row: dict[str, Any] = {"sent": len(group), "expected": expected.get(name, "")}
        row |= {"outcomes": {o: outcomes[o] for o in OUTCOMES if outcomes[o]}}
        row["as_expected"] = outcomes[row["expected"]] if row["expected"] else None
        table[name] = row | {"errors": dict(Counter(r.detail for r in group if r.detail))}
    return table


def verdict(
    results: Sequence[Result],
    rows: Sequence[dict[str, Any]],
    before: Sample,
    after: Sample,
    chores: Chores,
    judged: bool,
) -> dict[str, Any]:
    """Every request answered; growth from the first to the last quarter (judged on a full
    run: a quick one is mostly warm-up), what is left after the load, stuck requests; slow
    clients answered at their timeouts, reloads accepted, limits shared again after Redis."""
    quarter = max(len(rows) // 4, 1)
    first, last = rows[:quarter], rows[-quarter:]
    rss_first, rss_last = mean(first, "rss_mb"), mean(last, "rss_mb")
    outcomes = Counter(r.outcome for r in results)
    answered = len(results) - outcomes["timeout"] - outcomes["client_error"]
    growth_pct = round(100.0 * (rss_last - rss_first) / rss_first, 1)
    non_tcp = (mean(first, "fds") - mean(first, "tcp"), mean(last, "fds") - mean(last, "tcp"))
    not_sockets = (mean(first, "non_socket_fds"), mean(last, "non_socket_fds"))
    flat = growth_pct <= FLAT_RSS_PCT and not_sockets[1] - not_sockets[0] <= FLAT_FDS
    slow, reloaded = slow_clients(chores), Counter(r.status for r in chores.reloads)
    checks = {
        "sent_equals_answered": answered == len(results),
        "nothing_stuck": outcomes["timeout"] == 0 and after.in_flight == 0,
        "flat": flat or not judged,
        "slow_clients_timed_out": slow["late"] == 0 and slow["other"] == 0 and slow["408"] > 0,
        "reloads_accepted": bool(reloaded) and set(reloaded) == {200},
        "limits_shared_after_redis": not chores.redis_down or after.limits_shared == 1,
    }
    return {
        "requests": len(results),
        "answered": answered,
        "outcomes": {name: outcomes[name] for name in OUTCOMES},
        "rss_first_quarter_mb": rss_first,
        "rss_last_quarter_mb": rss_last,
        "rss_growth_mb": round(rss_last - rss_first, 1),
        "rss_growth_pct": growth_pct,
        "flat_judged": judged,
        "rss_peak_mb": max(row["rss_mb"] for row in rows),
        "fds_first_quarter": mean(first, "fds"),
        "fds_last_quarter": mean(last, "fds"),
        "fd_growth": round(mean(last, "fds") - mean(first, "fds"), 1),
        # Descriptors that are not TCP connections (files, pipes, the listener): a leak of
        # those cannot hide behind a client's keep-alive pool that grew at a busy moment.
        "non_tcp_fds_first_quarter": round(non_tcp[0], 1),
        "non_tcp_fds_last_quarter": round(non_tcp[1], 1),
        "non_socket_fds_first_quarter": not_sockets[0],
        "non_socket_fds_last_quarter": not_sockets[1],
        "before_load": asdict(before),
        "after_load": asdict(after),
        "in_flight_after_load": after.in_flight,
        "stuck_requests": outcomes["timeout"],
        "dropped_connections": outcomes["client_error"],
        "slow_clients": slow,
        "reloads": dict(sorted(reloaded.items())),
        "limits_shared_after_load": after.limits_shared,
        "checks": checks,
        "passed": all(checks.values()),
    }


def slow_clients(chores: Chores) -> dict[str, int]:
    """Slow connections by how they ended: 408 at their timeout; ``late``, answered (or still
    unanswered at the end) more than ``LATE_S`` past it, beyond what the client's own loop was
    late then; ``other``, any other answer; ``open``, still within their timeout at the end."""
    counts = Counter({"opened": len(chores.slow), "408": 0, "late": 0, "other": 0, "open": 0})
    for conn in chores.slow:
        due = conn.started + chores.timeouts[conn.kind] + LATE_S
        seen = conn.answered if conn.answered < math.inf else chores.end
        due += max((late for at, late in chores.lag if due - 1 <= at <= seen + 1), default=0.0)
        if conn.answered == math.inf:
            counts["late" if chores.end > due else "open"] += 1
        elif conn.answered > due:
            counts["late"] += 1
        else:
            counts["408" if conn.status == 408 else "other"] += 1
    return dict(counts)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile, in ms rounded to 0.1; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100.0 * len(ordered)) - 1, 0)
    return round(ordered[rank], 1)


def mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    return round(statistics.fmean(row[key] for row in rows), 1)
