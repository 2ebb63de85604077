"""What ``burst_client.py`` makes of the chunks it read: delays, gaps, coalesced and reordered
chunks, over the chunks the upstream sent once every stream had opened. Pure.

A chunk's delay is the time it was read minus the time the upstream wrote it (``ticks.py``); its
gap, the time since the stream's previous chunk was read. Both count only the chunks sent after
``counted_from`` (a gap: both of its chunks). A chunk read by the same ``data_received`` as the
stream's previous one was coalesced; one whose index is not the previous one's plus one,
reordered (or the one between was lost).
"""

from dataclasses import dataclass, field
from itertools import pairwise

from gateway.stats import percentile


@dataclass
class Arrival:
    index: int
    sent: float
    read: float
    batch: int  # which `data_received` call of its stream read it


@dataclass
class Stream:
    """One connection's stream: what arrived, and how it ended."""

    started: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    error: bool = False
    complete: bool = False


def summarise(streams: list[Stream], chunks: int, counted_from: float) -> dict[str, object]:
    """Percentiles in milliseconds over the counted chunks of every stream."""
    delays: list[float] = []
    gaps: list[float] = []
    ttft: list[float] = []
    coalesced = reordered = 0
    for stream in streams:
        arrivals = stream.arrivals
        if arrivals:
            ttft.append(arrivals[0].read - stream.started)
        for before, chunk in pairwise(arrivals):
            reordered += chunk.index != before.index + 1
            if chunk.sent <= counted_from:
                continue
            delays.append(chunk.read - chunk.sent)
            coalesced += chunk.batch == before.batch
            if before.sent > counted_from:
                gaps.append(chunk.read - before.read)

    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q) * 1000.0, 4) if values else None

    return {
        "streams": len(streams),
        "errors": sum(s.error for s in streams),
        "short_streams": sum(len(s.arrivals) < chunks for s in streams if not s.error),
        "events": sum(len(s.arrivals) for s in streams),
        "counted": len(delays),
        "delay_p50_ms": ms(delays, 50),
        "delay_p99_ms": ms(delays, 99),
        "delay_p999_ms": ms(delays, 99.9),
        "gap_p50_ms": ms(gaps, 50),
        "gap_p99_ms": ms(gaps, 99),
        "ttft_p50_ms": ms(ttft, 50),
        "ttft_p99_ms": ms(ttft, 99),
        "coalesced": coalesced,
        "reordered": reordered,
    }


def by_index(streams: list[Stream], counted_from: float) -> dict[str, float]:
    """Delay p99 of the counted chunks of each index (which step is late: the first after the
    opens, the last one, with every stream's end, or all alike)."""
    delays: dict[int, list[float]] = {}
    for stream in streams:
        for chunk in stream.arrivals[1:]:
            if chunk.sent > counted_from:
                delays.setdefault(chunk.index, []).append(chunk.read - chunk.sent)
    return {str(i): round(percentile(d, 99) * 1000.0, 3) for i, d in sorted(delays.items())}
