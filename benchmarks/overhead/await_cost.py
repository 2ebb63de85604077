"""What a level of `await` costs a request: chains of coroutines, 1 to 12 deep, on uvloop.

Usage: ``python benchmarks/overhead/await_cost.py [--calls N]``

Each call awaits a chain of N coroutines whose innermost one waits once on a future that the
loop completes on its next turn, as a request's task waits once for its upstream answer. The
gateway's hot path is about twelve levels deep between a request's task and the upstream
socket; this says what removing some of them would save. The best round of each depth,
on the gateway's core.
"""

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[2]))  # for procs' benchmarks.* imports

import uvloop
from procs import GATEWAY_CORE

DEPTHS = (1, 4, 8, 12)
Level = Callable[[asyncio.AbstractEventLoop, int, int], Coroutine[Any, Any, int]]


async def innermost(loop: asyncio.AbstractEventLoop, a: int, b: int) -> int:
    waiter = loop.create_future()
    loop.call_soon(waiter.set_result, a)
    return await waiter + b


def chain(depth: int) -> Level:
    """A coroutine function `depth` levels deep, each passing its arguments down."""
    level: Level = innermost
    for _ in range(depth - 1):
        level = _around(level)
    return level


def _around(inner: Level) -> Level:
    async def level(loop: asyncio.AbstractEventLoop, a: int, b: int) -> int:
        return await inner(loop, a, b)

    return level


async def measure(calls: int, rounds: int) -> list[tuple[int, float]]:
    """Best µs per call of each depth; the depths take turns, so each sees the same host."""
    loop = asyncio.get_running_loop()
    calls_of = {depth: chain(depth) for depth in DEPTHS}
    best = dict.fromkeys(DEPTHS, float("inf"))
    for _ in range(rounds):
        for depth, call in calls_of.items():
            started = time.perf_counter()
            for _ in range(calls):
                await call(loop, 1, 2)
            best[depth] = min(best[depth], (time.perf_counter() - started) / calls * 1e6)
    return list(best.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls per depth and round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.sched_setaffinity(0, {GATEWAY_CORE})
    rows = uvloop.run(measure(args.calls, args.rounds))
    one = rows[0][1]
    print("| levels of await | per call | more than one level |\n|---|---|---|")
    for depth, us in rows:
        print(f"| {depth} | {us:.2f} µs | {us - one:+.2f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
