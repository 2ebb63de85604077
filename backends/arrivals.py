"""A streamed answer's pieces, each with the time it arrived, kept without a tracked object
per piece.

Kept as a list of `(time, piece)` tuples, every event of a shadowed stream left one more object
for the cyclic collector to count: with many streams at an engine's step, young collections came
every few steps and, now and then, an older one that walked every open stream's coroutines and
stopped the loop for longer than a step (benchmarks/README.md, "The collector at engine steps").
Times go to an `array` of doubles and pieces to a list of bytes; the collector tracks neither
their items nor the floats.

Example::

    arrivals = Arrivals()
    arrivals.add(12.5, b"data: {...}\\n\\n")
    [(at, len(piece)) for at, piece in arrivals]     # [(12.5, 13)]
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
