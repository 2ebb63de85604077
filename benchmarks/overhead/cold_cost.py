"""What one step of the gateway costs when it runs again after a pause, on the gateway's core.

Usage: ``python benchmarks/overhead/cold_cost.py [--rounds N]``

Times two ways to read the overhead run's chat body, back to back and after a pause of the same
process (spinning, never leaving the CPU, or sleeping, for 0.1, 1 and 10 ms): orjson, then
pydantic's strict model (what `parse_body` ran for every body until plain bodies, and the
largest single step of a request), and `gateway.proxy.parsing.parse_body` as it runs now (orjson,
then `gateway.proxy.plain_bodies`). At one connection
the gateway's steps run one request (~0.4 ms) apart; one stream at a time, 100 ms apart. On a
machine whose caches are the process's own, the pause changes nothing. On this VM it changes
the figures several times over (benchmarks/README.md, "A step after a pause"): that, not the
number of steps, is most of what the gateway adds at one connection and to the first token.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# Appended, so `PYTHONPATH=<a worktree of another commit>` measures that commit's code.
sys.path.append(str(Path(__file__).resolve().parents[2]))

import orjson
from loads import benchmark_body
from procs import GATEWAY_CORE

from backends.base import Route
from gateway.proxy.parsing import SCHEMAS, parse_body

PAUSES_MS = (0.1, 1.0, 10.0)


def spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def median_us(step: Callable[[], object], pause: Callable[[], None], rounds: int) -> float:
    """Median time of one `step` after each `pause`."""
    times = []
    for _ in range(rounds):
        pause()
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="timed calls per row")
    args = parser.parse_args()
    os.sched_setaffinity(0, {GATEWAY_CORE})
    body = benchmark_body()
    model = SCHEMAS[Route.CHAT]
    steps = {
        "orjson + pydantic": lambda: model.model_validate(orjson.loads(body)),
        "parse_body (orjson + plain_bodies)": partial(parse_body, Route.CHAT, body),
    }
    for step in steps.values():
        median_us(step, lambda: None, 2000)  # warm-up: imports, pydantic's first calls
    pauses: list[tuple[str, Callable[[], None], int]] = [("none", lambda: None, args.rounds)]
    for ms in PAUSES_MS:
        pauses.append((f"spinning {ms:g} ms", partial(spin, ms / 1e3), args.rounds))
    for ms in PAUSES_MS:
        rounds = max(1, args.rounds // 10) if ms >= 10 else args.rounds  # keep it under a minute
        pauses.append((f"sleeping {ms:g} ms", partial(time.sleep, ms / 1e3), rounds))
    print(f"| pause before each call (core {GATEWAY_CORE}) | " + " | ".join(steps) + " |")
    print("|---" * (len(steps) + 1) + "|")
    for name, pause, rounds in pauses:
        # Each step after its own pauses, in turn, so both see the same spell of the host.
        times = [median_us(step, pause, rounds) for step in steps.values()]
        print(f"| {name} | " + " | ".join(f"{us:.1f} µs" for us in times) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
