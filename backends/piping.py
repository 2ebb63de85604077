"""Handing a stream's events on as they arrive, without a task woken for each of them.

Pulling an `EventStream` (`async for`) wakes the reader's task once per event, and every event
climbs the chain of coroutines and async generators between the socket and the relay. When
engines step all their streams at once, that chain ran for every stream at every step
(benchmarks/README.md, "Streams in engine steps"). A stream that can be piped hands each event to
a `Deliver` callable from the upstream socket's own read callback instead; its reader's task
waits only for the end, or for its own client to drain. `pipe` pipes a stream that can and pulls
one that cannot (an adapter that builds its events itself), so callers need not care.

Example::

    def deliver(events: bytes) -> bool:
        client.write(events)
        return not client.full()  # False: no more for now

    while not await pipe(stream, deliver):
        await client.drained()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from backends.base import EventStream

# Takes one or more whole events; False when it can take no more for now (its own peer is
# slow): the stream then stops reading until it is piped again. It must not raise, as it runs
# inside the upstream socket's callback; a reader with work that can fail catches it itself.
Deliver = Callable[[bytes], bool]


class Piped(Protocol):
    """An `EventStream` that can hand its events on from the socket's callback."""

    async def pipe(self, deliver: Deliver) -> bool:
        """Each event to `deliver` as it arrives: True at the stream's end, False when
        `deliver` refused more (call again); raises what iterating the stream would."""
        ...


async def pipe(events: EventStream, deliver: Deliver) -> bool:
    """`events.pipe(deliver)` for a stream that can be piped; else its events pulled and handed
    to `deliver` one by one (the same contract, a task wake per event)."""
    # getattr, not isinstance: a runtime-checked Protocol walks its members on every check.
    own: Callable[[Deliver], Awaitable[bool]] | None = getattr(events, "pipe", None)
    if own is not None:
        return await own(deliver)
    async for chunk in events:
        if not deliver(chunk):
            return False
    return True
