"""Socket writes gathered per turn of the event loop: the first at once, the rest at its end.

Why: on a VM, a write that wakes a reader asleep on another core costs the writer the wake-up,
in its own CPU time, far more than a write that wakes nobody (benchmarks/README.md, "Writes
gathered per turn of the loop"). Under load the gateway writes to many sockets in one turn of
its loop, each after some Python, so each write found its reader asleep again. Held to the
turn's end, they leave back to back, and the readers woken by the first find the rest already
there. The first write of a turn goes at once, so a request alone on an idle gateway waits for
nothing.

Order is kept: while a turn holds writes, every write of that turn is held behind them. Past
`MAX_HELD` bytes the held writes leave at once, so a transport's flow control (its
`pause_writing`) still sees a sender that writes faster than its reader reads.
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from backends.transport.busy_poll import CLIENT, BusyPoll

MAX_HELD = 64 * 1024  # bytes; asyncio's and uvloop's default high-water mark of a transport


class WriteBatch:
    """The writes held in one event loop's current turn; `batch_of(loop)` gives its batch."""

    __slots__ = ("_awaited", "_held", "_held_bytes", "_open", "busy_poll")

    def __init__(self) -> None:
        self._held: list[tuple[asyncio.WriteTransport, bytes]] = []
        self._held_bytes = 0
        self._open = False  # a write went this turn; the turn's end is scheduled
        self.busy_poll: BusyPoll | None = None  # armed at the end of each turn that wrote
        self._awaited = CLIENT  # what the turn's last write waits for

    def write(self, transport: asyncio.WriteTransport, data: bytes, awaited: int = CLIENT) -> None:
        """`awaited`: what the write waits for (`backends.transport.busy_poll`): a client's next
        request (a response's end), an upstream's answer (a request) or its next event (a relayed
        one). The turn's last write says what the loop polls for when the turn ends."""
        self._awaited = awaited
        if self._open:
            self._held.append((transport, data))
            self._held_bytes += len(data)
            if self._held_bytes > MAX_HELD:
                self.flush()
            return
        self._open = True
        # The running loop, not one kept here: a batch must not keep its loop alive.
        asyncio.get_running_loop().call_soon(self._end_turn)
        transport.write(data)

    def flush(self) -> None:
        """Writes what is held now; call it before closing a transport, so its bytes go first."""
        held, self._held, self._held_bytes = self._held, [], 0
        for transport, data in held:
            if not transport.is_closing():  # the peer left: nobody to read it
                transport.write(data)

    def _end_turn(self) -> None:
        self._open = False
        if self._held:
            self.flush()
        if self.busy_poll is not None:
            self.busy_poll.arm(self._awaited)


_BATCHES: WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = WeakKeyDictionary()


def batch_of(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """The loop's one batch (a protocol asks once, when it is built)."""
    batch = _BATCHES.get(loop)
    if batch is None:
        batch = _BATCHES[loop] = WriteBatch()
    return batch
