"""Busy polling: after a write, the loop keeps polling its sockets for a while instead of sleeping.

Why: a gateway that has just written to a socket expects an answer soon (the upstream's reply to
a request, the client's next request on its kept-alive connection). If its core falls asleep in
`epoll_wait` meanwhile, the answer must wake it. On this machine (a VM whose guest halts at once,
`guest_halt_poll_ns=0`), that wake-up goes through the hypervisor and costs tens of µs per hop; a
request through the gateway makes two such hops more than one sent direct. Polling with a zero
timeout until the window ends, the loop finds the answer without being woken:
`benchmarks/overhead/floor_proxy.py` at one connection adds 0.34 to 0.42 ms sleeping and 0.19
to 0.22 ms polling for 300 µs, the gateway 0.44 to 0.46 and 0.32 to 0.34 ms (benchmarks/README.md,
"Busy polling").

The price is CPU: a core that gets a request more often than once per window never sleeps. So it
is off unless `GATEWAY_BUSY_POLL_US` asks for it, and meant for a worker with a core of its own.
Under load nothing changes: the loop is never idle, and the poll is one more callback per turn.
"""

from __future__ import annotations

import asyncio
from time import monotonic


class BusyPoll:
    """Keeps the running loop polling, not sleeping, until `window` seconds after the last
    `arm()`. One per loop; it keeps no reference to its loop (the loop's `WriteBatch` holds it,
    and must not keep the loop alive)."""

    __slots__ = ("_spinning", "_until", "_window")

    def __init__(self, window: float) -> None:
        self._window = window
        self._until = 0.0
        self._spinning = False

    def arm(self) -> None:
        self._until = monotonic() + self._window
        if not self._spinning:
            self._spinning = True
            asyncio.get_running_loop().call_soon(self._spin)

    def _spin(self) -> None:
        # A callback ready to run makes the loop poll its sockets with a zero timeout.
        if monotonic() < self._until:
            asyncio.get_running_loop().call_soon(self._spin)
        else:
            self._spinning = False
