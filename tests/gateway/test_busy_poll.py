"""gateway.busy_poll: an armed loop keeps polling (it uses CPU while it has nothing to do) until
the window after the last arm ends, then sleeps; under both event loops the gateway may run on.
Measured as the process's CPU time, the one thing busy polling changes. How the window adapts is
replayed on made-up waits, and the `auto` setting's rule checked on made-up CPUs."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.busy_poll import BusyPoll, usable_cpus, window_for
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


def test_a_long_sleep_stops_polling_until_a_short_one(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        poll = BusyPoll(0.05)
        poll.arm()
        await asyncio.sleep(0.15)  # the window ends, and the loop sleeps past the limit
        poll.arm()  # so this wait is not polled
        assert await cpu_seconds_while_waiting(0.04) < 0.02
        assert poll.window == 0
        poll.arm()  # at once: a short sleep, so a window of an eighth of the limit
        assert poll.window == 0.05 / 8

    run(scenario)


def replay(poll: BusyPoll, waits: list[float]) -> tuple[float, float]:
    """Drives `poll` as a loop would through writes `waits` apart (each write ends the wait
    before it): the share of waits that ended while polling, and the seconds polled per wait."""
    now, polled, covered = 0.0, 0.0, 0
    until = poll.window if poll.start(now) else None
    for wait in waits:
        then = now + wait
        if until is not None and then < until:  # the next write came while polling
            covered += 1
            polled += wait
        elif until is not None:  # the window ended first: the loop slept until `then`
            poll.stop(until)
            polled += until - now
            until = None
        if poll.start(then) or until is not None:
            until = then + poll.window
        now = then
    return covered / len(waits), polled / len(waits)


LIMIT = 300e-6


def test_answers_within_the_limit_are_polled_for() -> None:
    covered, polled = replay(BusyPoll(LIMIT), [100e-6, 250e-6] * 500)
    assert covered > 0.99, covered
    assert polled < 180e-6, polled  # what the waits took, no more


def test_answers_mostly_within_the_limit_are_still_polled_for_at_the_median() -> None:
    rng = random.Random(6)  # one wait in twenty takes 2 ms: a slow answer now and then
    waits = [2e-3 if rng.random() < 0.05 else rng.uniform(80e-6, 250e-6) for _ in range(2000)]
    covered, _ = replay(BusyPoll(LIMIT), waits)
    assert covered > 0.6, covered


def test_a_slow_engine_costs_an_eighth_of_the_limit_per_request() -> None:
    """A 25 ms engine, and the client's next request 80 µs after each answer: the window ends
    up on the engine's wait, once per request, at its smallest."""
    covered, polled = replay(BusyPoll(LIMIT), [25e-3, 80e-6] * 500)
    assert polled * 2 <= LIMIT / 8 * 1.1, (
        polled
    )  # and the first window, of the whole limit  # per request: two waits
    assert covered < 0.01


def test_a_worker_idle_between_requests_hardly_polls() -> None:
    _, polled = replay(BusyPoll(LIMIT), [1.0, 100e-6] * 100)  # a request a second
    assert polled * 2 <= LIMIT / 8 * 1.1, polled  # and the first window, of the whole limit


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 2.0), ("50000 100000\n", 0.5), ("300000 100000\n", 2.0), (None, 2.0),
     ("garbled\n", 2.0)],
)  # fmt: skip
def test_usable_cpus_is_the_affinity_capped_by_the_cgroup_quota(
    tmp_path: Path, cpu_max: str | None, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert usable_cpus(path) == expected


def test_auto_polls_only_when_each_worker_has_a_cpu() -> None:
    assert window_for("auto", workers=2, cpus=2.0) == 300e-6
    assert window_for("auto", workers=2, cpus=1.5) == 0  # a shared CPU: spinning takes it away
    assert window_for("auto", workers=1, cpus=0.5) == 0
    assert window_for(0, workers=1, cpus=2.0) == 0
    assert window_for(1000, workers=4, cpus=1.0) == 1000e-6  # an explicit limit is obeyed
