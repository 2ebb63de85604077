"""What a replica pool counts per endpoint, through numbers its owner hands it.

The gateway's metrics hand in numbers that every worker process of a group adds up
(`gateway.metrics`); `LocalStats` keeps plain ones, for tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Tally(Protocol):
    """A count that only grows."""

    def inc(self, amount: float = 1.0) -> None: ...


class Level(Tally, Protocol):
    """A value that goes up and down."""

    def dec(self, amount: float = 1.0) -> None: ...

    def set(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class EndpointStats:
    in_flight: Level  # requests and streams under way on it
    out: Level  # 1 while out of rotation: ejected, or its readiness probe failed
    ejections: Tally  # times its failures ejected it
    answered: Tally  # calls it answered (an engine's 4xx included: the request was at fault)
    failed: Tally  # calls that failed on it (unreachable, timeout, broken answer, 5xx)


class PoolStats(Protocol):
    def endpoint(self, backend: str, endpoint: str) -> EndpointStats:
        """The numbers of one endpoint (asked once, when the endpoint joins)."""
        ...

    def retries(self, backend: str) -> Tally:
        """Calls sent again to another endpoint after a safe failure."""
        ...


class Number:
    """A plain number: both a `Tally` and a `Level`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class LocalStats:
    """Plain numbers, readable as attributes: `stats.endpoints["10.0.0.5:8000"].failed.value`."""

    def __init__(self) -> None:
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.retried = Number()

    def endpoint(self, backend: str, endpoint: str) -> EndpointStats:
        found = self.endpoints.get(endpoint)
        if found is None:
            found = self.endpoints[endpoint] = LocalEndpoint(
                Number(), Number(), Number(), Number(), Number()
            )
        return found

    def retries(self, backend: str) -> Tally:
        return self.retried


@dataclass(frozen=True, slots=True)
class LocalEndpoint(EndpointStats):
    in_flight: Number
    out: Number
    ejections: Number
    answered: Number
    failed: Number
