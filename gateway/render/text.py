"""How both reports write their numbers: a rate with its Wilson interval, latency percentiles,
a confusion matrix. One place, so a rate reads the same in the shadow report, its gate's
reasons and the eval, in text and in HTML alike.

Example::

    interval(proportion(10, 14))      # "71.4% [45.4%, 88.3%]"
    spread(latency([100.0, 120.0]))   # "p50 110.0  p95 119.0  p99 119.8  mean 110.0"
"""

from __future__ import annotations

from gateway.stats import Confusion, Latency, Proportion

PERCENTILES = ("p50", "p95", "p99")  # the names of `Latency.percentiles`, in order


def percent(share: float) -> str:
    return f"{share:.1%}"


def bounds(p: Proportion) -> str:
    """The Wilson 95% interval: "[45.4%, 88.3%]"."""
    return f"[{p.low:.1%}, {p.high:.1%}]"


def interval(p: Proportion) -> str:
    """The rate and its interval: "71.4% [45.4%, 88.3%]"."""
    return f"{p.rate:.1%} {bounds(p)}"


def counts(p: Proportion) -> str:
    return f"{p.successes}/{p.n}"


def shown(p: Proportion | None) -> str | None:
    """The interval, or None when nothing was measured (a table shows a dash)."""
    return None if p is None or p.n == 0 else interval(p)


def spread(latency: Latency, signed: bool = False) -> str:
    """p50, p95, p99 and mean in ms; `signed` for deltas (+12.0)."""
    form = "+.1f" if signed else ".1f"
    names, values = (*PERCENTILES, "mean"), (*latency.percentiles, latency.mean)
    return "  ".join(f"{name} {value:{form}}" for name, value in zip(names, values, strict=True))


def triple(latency: Latency | None) -> str | None:
    """ "p50 / p95 / p99" for a table cell; None when nothing was measured."""
    return " / ".join(f"{value:.1f}" for value in latency.percentiles) if latency else None


def matrix(confusion: Confusion) -> list[str]:
    """A confusion matrix as aligned text: rows gold (or primary), columns predicted."""
    columns = confusion.predicted
    width = max(len(label) for label in [*columns, *confusion.labels]) + 2
    lines = [" " * width + "".join(f"{column:>{width}}" for column in columns)]
    for name, row in zip(confusion.labels, confusion.matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{value:>{width}}" for value in row))
    return lines
