"""The event loops the gateway may run on, for tests of code that works below asyncio's API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

Scenario = Callable[[asyncio.AbstractEventLoop], Awaitable[None]]
LOOP_KINDS = ("uvloop", "asyncio")


def run_on(kind: str, scenario: Scenario) -> None:
    """Runs `scenario` to completion on a new loop of `kind`, then closes the loop."""
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()
