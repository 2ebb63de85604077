"""A streamed answer's pieces, each with the time it arrived, kept without a tracked object
per piece.

Kept as a list of `(time, piece)` tuples, every event of a shadowed stream left one more object
for the cyclic collector to count: at a 256-stream engine step with the candidate read in the
same process, a young collection every 20 steps and, every few seconds, an older one that walked
every open stream's coroutines and stalled the loop for 30 ms (benchmarks/README.md, "The
collector at engine steps"). Times go to an `array` of doubles and pieces to a list of bytes;
the collector tracks neither their items nor the floats.

Example::

    arrivals = Arrivals()
    arrivals.add(12.5, b"data: {...}\\n\\n")
    [(at, len(piece)) for at, piece in arrivals]     # [(12.5, 15)]
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator


class Arrivals:
    """Pieces in the order they came, and the time (`perf_counter`) each came."""

    __slots__ = ("pieces", "times")

    def __init__(self) -> None:
        self.times = array("d")
        self.pieces: list[bytes] = []

    def add(self, at: float, piece: bytes) -> None:
        self.times.append(at)
        self.pieces.append(piece)

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        return zip(self.times, self.pieces, strict=True)

    def __len__(self) -> int:
        return len(self.pieces)
