"""Statistics for evaluations and backend comparisons, as pure functions of plain sequences.

Labels are strings, so the same functions serve any categorical field (a tagger's mood, a
boolean rendered "true"/"false", a shadow pair's parsed output). Nothing here does I/O.
The values they return (`Proportion`, `Latency`, `Confusion`) are the shadow report's and the
eval summary's shared vocabulary: both reports hold them as they are, and their renderers
format them in one place (`gateway.render.text`).

Example::

    proportion(87, 100)                      # Proportion(87, 100, rate=0.87, low=0.790.., ...)
    latency([12.0, 15.0, 40.0]).p95          # 37.5
    confusion(["a", "b"], ["a", "a"]).count("b", "a")   # 1
    macro_f1(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])  # 0.666..
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


@dataclass(frozen=True, slots=True)
class Proportion:
    """`successes` out of `n`, with its Wilson score interval. The rate is a field (worked out
    on construction), so the value reads in the order every report prints it."""

    successes: int
    n: int
    rate: float = field(init=False)  # 0 when n is 0
    low: float
    high: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", self.successes / self.n if self.n else 0.0)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there is no data.

    Unlike the normal approximation it stays inside [0, 1] and is usable at 0% and 100%,
    which is where agreement rates of good backends live.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    rate = successes / n
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    margin = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def proportion(successes: int, n: int, z: float = Z95) -> Proportion:
    low, high = wilson(successes, n, z)
    return Proportion(successes, n, low, high)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass(frozen=True, slots=True)
class Latency:
    """The spread of `n` timings: the percentiles reports print, and the mean."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float

    @property
    def percentiles(self) -> tuple[float, float, float]:
        return self.p50, self.p95, self.p99


def latency(values: Sequence[float]) -> Latency:
    """p50, p95, p99 (`percentile`) and the mean of at least one timing."""
    p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
    return Latency(len(values), p50, p95, p99, statistics.fmean(values))


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts of (gold, predicted) pairs; rows are `labels`, columns `predicted`."""

    labels: tuple[str, ...]
    predicted: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]

    def count(self, gold: str, predicted: str) -> int:
        return self.matrix[self.labels.index(gold)][self.predicted.index(predicted)]


def confusion(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> Confusion:
    """The confusion matrix. Rows: `labels` (default: the gold labels, sorted) plus any gold
    label missing from them; columns: the same plus any other predicted label (e.g. an
    "invalid" answer), sorted after them."""
    _same_length(gold, predicted)
    rows = list(labels) if labels is not None else sorted(set(gold))
    rows += sorted(set(gold) - set(rows))
    columns = rows + sorted(set(predicted) - set(rows))
    counts = [[0] * len(columns) for _ in rows]
    for truth, guess in zip(gold, predicted, strict=True):
        counts[rows.index(truth)][columns.index(guess)] += 1
    return Confusion(tuple(rows), tuple(columns), tuple(tuple(row) for row in counts))


def f1_scores(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, float | None]:
    """F1 of each label, one against the rest; None for a label absent from both sequences."""
    _same_length(gold, predicted)
    scores: dict[str, float | None] = {}
    for label in labels:
        hits = sum(1 for t, p in zip(gold, predicted, strict=True) if t == p == label)
        false_pos = sum(1 for t, p in zip(gold, predicted, strict=True) if p == label != t)
        false_neg = sum(1 for t, p in zip(gold, predicted, strict=True) if t == label != p)
        denominator = 2 * hits + false_pos + false_neg
        scores[label] = 2 * hits / denominator if denominator else None
    return scores


def macro_f1(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> float | None:
    """The unweighted mean F1 over `labels` (default: the gold labels), skipping labels that
    occur in neither sequence. Predictions outside `labels` (an invalid answer) count as misses
    of their gold label and are not a class of their own. None when no label occurs."""
    scores = f1_scores(gold, predicted, labels if labels is not None else sorted(set(gold)))
    present = [score for score in scores.values() if score is not None]
    return sum(present) / len(present) if present else None


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> Proportion:
    """Share of positions where the prediction equals the gold label."""
    return agreement(gold, predicted)


def agreement(first: Sequence[str], second: Sequence[str]) -> Proportion:
    """Share of positions where two sequences of labels are equal, with its interval."""
    _same_length(first, second)
    same = sum(1 for a, b in zip(first, second, strict=True) if a == b)
    return proportion(same, len(first))


def _same_length(first: Sequence[str], second: Sequence[str]) -> None:
    if len(first) != len(second):
        raise ValueError(f"sequences differ in length: {len(first)} and {len(second)}")
