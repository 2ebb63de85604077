"""Busy polling: after a write, the loop keeps polling its sockets for a while instead of sleeping.

Why: a gateway that has just written to a socket expects an answer soon (the upstream's reply to
a request, the client's next request on its kept-alive connection). If its core falls asleep in
`epoll_wait` meanwhile, the answer must wake it, and on a VM whose guest halts an idle vCPU at
once (`guest_halt_poll_ns=0`) that wake-up goes through the hypervisor, twice more per request
than for one sent direct. Polling with a zero timeout until the window ends, the loop finds the
answer without being woken (benchmarks/README.md, "Busy polling").

The price is CPU, so the window adapts, as KVM's halt polling does on a host: one window per
kind of wait (an upstream's answer, its next event in a stream, a client's next request) grows
after a sleep shorter than the limit, when polling longer would have paid, and drops to none
after a longer one. A wait is timed from the end of the turn that wrote to the end of the next,
so it overstates the wait, which errs towards polling less
(`tests/backends/transport/test_busy_poll.py` replays such waits).

By default (`GATEWAY_BUSY_POLL_US=auto`) a worker polls only when every worker has a CPU of its
own (`window_for`): spinning on a shared or quota-limited CPU takes it from the others.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from time import monotonic
from typing import Literal

# Long enough for a lone stream's client, whose own core must wake first, to send its next
# request within it; a longer limit gained nothing (benchmarks/README.md, "Busy polling").
AUTO_LIMIT_US = 1000
CGROUP = Path("/sys/fs/cgroup")


def usable_cpus(cgroup: Path = CGROUP) -> float:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota (docker
    `--cpus`, compose `cpus:`), which the affinity does not show."""
    cpus = float(len(os.sched_getaffinity(0)))
    quota = _cpu_quota(cgroup)
    return cpus if quota is None else min(cpus, quota)


def _cpu_quota(cgroup: Path) -> float | None:
    """CPUs' worth of time per period the cgroup allows; None: no quota, or none readable."""
    try:  # cgroup v2: "<quota> <period>", or "max <period>"
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 is none
        v1 = cgroup / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def window_for(setting: int | Literal["auto"], workers: int, cpus: float) -> float:
    """The longest window in seconds for `GATEWAY_BUSY_POLL_US`; 0 is off."""
    if setting == "auto":
        return AUTO_LIMIT_US / 1e6 if cpus >= workers else 0.0
    return setting / 1e6


# What a write waits for: a client's next request (after a response's end), an upstream's answer
# (after a request), an upstream's next event (after one relayed).
CLIENT, UPSTREAM, RELAY = 0, 1, 2


class BusyPoll:
    """Keeps the running loop polling, not sleeping, for up to `limit` seconds after each
    `arm()`, with a window for each kind of wait, adapted to how long waits of that kind took.
    One per loop; it keeps no reference to its loop (the loop's `WriteBatch` holds it, and must
    not keep the loop alive)."""

    __slots__ = (
        "_asleep_since",
        "_limit",
        "_smallest",
        "_spinning",
        "_until",
        "_waiting",
        "_windows",
    )

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._smallest = limit / 8  # the first window after none
        self._windows = [limit, limit, limit]  # by kind of wait: how long the next one is polled
        self._waiting = CLIENT  # the kind of the wait under way: the last write's
        self._until = 0.0
        self._spinning = False
        # When the last window ended, or a write went unpolled; never, so far: the first write
        # polls the whole limit.
        self._asleep_since = float("inf")

    def window(self, awaited: int) -> float:
        """How long, in seconds, the next wait of kind `awaited` will be polled."""
        return self._windows[awaited]

    def arm(self, awaited: int = CLIENT) -> None:
        if self.start(monotonic(), awaited):
            asyncio.get_running_loop().call_soon(self._spin)

    def start(self, now: float, awaited: int) -> bool:
        """A write at `now`, which waits for `awaited`: it ends the wait under way, whose
        window adapts if the loop slept through its end, and polls for the new one. True when
        the loop starts polling (the caller schedules `_spin`)."""
        ended, self._waiting = self._waiting, awaited
        if not self._spinning:  # (polling, the wait ended within its window, which stays)
            before = self._windows[ended]
            if now - self._asleep_since < self._limit:  # polling longer would have paid
                self._windows[ended] = min(self._limit, max(2 * before, self._smallest))
            else:  # it would not have: none until a short sleep again
                self._windows[ended] = 0.0
        window = self._windows[awaited]
        self._until = now + window  # none: a spin under way ends at its next turn
        if self._spinning:
            return False
        if not window:
            self._asleep_since = now
            return False
        self._spinning = True
        return True

    def stop(self, now: float) -> None:
        """The window ended at `now` with nothing to do: the loop goes to sleep."""
        self._spinning = False
        self._asleep_since = now

    def _spin(self) -> None:
        # A callback ready to run makes the loop poll its sockets with a zero timeout.
        now = monotonic()
        if now < self._until:
            asyncio.get_running_loop().call_soon(self._spin)
        else:
            self.stop(now)
