"""Work that comes in bursts, spread over the event loop's turns: one waiter goes per turn.

An engine steps all its streams at once, so a thousand streams end at the same step, and each
then has its request's bookkeeping done and, when shadowed, its pair built. Done back to back,
that held up the last chunks of every other stream ending at that step (benchmarks/README.md,
"Streams in engine steps" and "Streams' ends"). Let through one per turn of the loop, that work
waits instead: between two waiters, the loop reads its sockets and the relay hands on what came.
The relay's finished streams (`gateway.proxy`) and the shadow's pairs (`gateway.shadow`) each
keep a line.

    turns = OnePerTurn()
    await turns.next()  # the next turn of the loop that is this waiter's
"""

from __future__ import annotations

import asyncio
from collections import deque


class OnePerTurn:
    """A line of waiters, one let through per turn of the running loop, oldest first."""

    def __init__(self) -> None:
        self._line: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    def __len__(self) -> int:
        return len(self._line)

    async def next(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._line.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._let_one_go)
        await waiter

    def _let_one_go(self) -> None:
        # Called soon from a callback, this runs at the next turn, after the loop's poll.
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():  # done: cancelled while waiting (a shutdown)
                waiter.set_result(None)
                break
        if self._line:
            asyncio.get_running_loop().call_soon(self._let_one_go)
        else:
            self._scheduled = False
