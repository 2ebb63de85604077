"""What a worker allows its clients: how long a request may take to arrive, and how many
connections may be open at once; and what enforcing that did, counted.

A client that sends its request a byte at a time (slowloris) holds a connection, a descriptor
and a parser for as long as it likes unless something times it out. So:

    a request's first byte --head_timeout--> the end of its head (request line and headers)
    the end of its head --body_timeout--> the end of its body, with no silence longer than
    body_read_timeout in between

A request past either gets 408 and its connection closes. Beyond `max_connections` open
connections, a worker closes new ones as soon as they are accepted, before reading a byte.

The app hands its `ConnectionGuard` to the server through the ASGI lifespan state (`STATE_KEY`),
ASGI's channel from an app to its server; an app that does not gets the defaults.

Example::

    guard = ConnectionGuard(ConnectionLimits(head_timeout=5.0, max_connections=1024))
    scope["state"][STATE_KEY] = guard  # in the app's lifespan startup
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.numbers import LocalNumbers, Numbers

log = logging.getLogger("gateway.http")

STATE_KEY = "gateway.http.connection_guard"
LOG_INTERVAL = 10.0  # seconds: at most one line about refused or timed-out connections per this
Phase = Literal["head", "body_read", "body"]
PHASES: tuple[Phase, ...] = ("head", "body_read", "body")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Timeouts in seconds; `max_connections` per worker process."""

    head_timeout: float = 10.0
    body_read_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 4096


class ConnectionGuard:
    """One worker's limits and counts, shared by its connections. Counts live in `numbers`:
    the metrics' store, which a scrape adds up over a worker group (`gateway.numbers`), or
    plain ones of its own; everything runs on the worker's one loop thread."""

    def __init__(
        self,
        limits: ConnectionLimits,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = LOG_INTERVAL,
        numbers: Numbers | None = None,
    ) -> None:
        self.limits = limits
        numbers = numbers if numbers is not None else LocalNumbers()
        self._open = numbers.cells(("client_connections",), 1)
        self._refused = numbers.cells(("client_connections_refused",), 1)
        self._timed_out = {phase: numbers.cells(("client_timeouts", phase), 1) for phase in PHASES}
        self._clock = clock
        self._interval = log_interval
        self._next_log = 0.0
        self._logged_refused = 0
        self._logged_timed_out = 0

    @property
    def open(self) -> int:
        """Client connections open now in this worker."""
        return int(self._open[0])

    @property
    def refused(self) -> int:
        """Connections closed on arrival: the worker was at `max_connections`."""
        return int(self._refused[0])

    @property
    def timed_out(self) -> dict[str, int]:
        """Requests refused with 408, by phase."""
        return {phase: int(cells[0]) for phase, cells in self._timed_out.items()}

    def admits(self) -> bool:
        """A new connection may stay (and is counted open); else it is counted refused."""
        if self._open[0] >= self.limits.max_connections:
            self._refused[0] += 1
            self._maybe_log()
            return False
        self._open[0] += 1
        return True

    def closed(self) -> None:
        self._open[0] -= 1

    def timed_out_in(self, phase: Phase) -> None:
        self._timed_out[phase][0] += 1
        self._maybe_log()

    def _maybe_log(self) -> None:
        """One line per interval at most, saying what happened since the last one: a flood
        of slow or surplus connections must not become a flood of log lines."""
        now = self._clock()
        if now < self._next_log:
            return
        self._next_log = now + self._interval
        refused, self._logged_refused = self.refused - self._logged_refused, self.refused
        timed = sum(self.timed_out.values())
        slow, self._logged_timed_out = timed - self._logged_timed_out, timed
        log.warning(
            "client connections: %d refused at the cap of %d per worker "
            "(GATEWAY_MAX_CONNECTIONS), %d closed for sending too slowly "
            "(GATEWAY_CLIENT_*_TIMEOUT), since the last such line",
            refused, self.limits.max_connections, slow,
        )  # fmt: skip


def guard_in(state: MutableMapping[str, Any]) -> ConnectionGuard:
    """The guard the app put in the lifespan state; without one, a guard with the defaults,
    kept there so that the server's connections share it."""
    guard = state.get(STATE_KEY)
    if not isinstance(guard, ConnectionGuard):
        guard = state[STATE_KEY] = ConnectionGuard(ConnectionLimits())
    return guard


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raises this process's soft limit of open files towards `needed` (never above the hard
    limit, never lower than it was); returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft, hard
