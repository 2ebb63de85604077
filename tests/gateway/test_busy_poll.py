"""gateway.busy_poll: an armed loop keeps polling (it uses CPU while it has nothing to do) until
the window after the last arm ends, then sleeps; under both event loops the gateway may run on.
Measured as the process's CPU time, the one thing busy polling changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.busy_poll import BusyPoll
from tests.support.loops import Scenario


async def cpu_seconds_while_waiting(seconds: float) -> float:
    before = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - before


def test_an_armed_loop_polls_until_its_window_ends_then_sleeps(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        assert await cpu_seconds_while_waiting(0.2) < 0.05  # a loop at rest sleeps
        BusyPoll(0.3).arm()
        polling = await cpu_seconds_while_waiting(0.25)
        await asyncio.sleep(0.1)  # the window ends
        after = await cpu_seconds_while_waiting(0.2)
        assert polling > 0.1, polling  # busy most of the window (less if the core is shared)
        assert after < 0.05, after

    run(scenario)


def test_each_arm_extends_the_window(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        poll = BusyPoll(0.15)
        poll.arm()
        await asyncio.sleep(0.1)
        poll.arm()  # now polling until 0.25 s
        await asyncio.sleep(0.08)
        still = await cpu_seconds_while_waiting(0.05)  # 0.18 to 0.23 s: past the first window
        assert still > 0.02, still

    run(scenario)
