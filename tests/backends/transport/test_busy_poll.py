"""backends.transport.busy_poll: an armed loop keeps polling (it uses CPU while it has nothing to
do) until the window after the last arm ends, then sleeps; under both event loops the gateway may
run on. Measured as the process's CPU time, the one thing busy polling changes. How the window
adapts is replayed on made-up waits, and the `auto` setting's rule checked on made-up CPUs."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backends.transport.busy_poll import (
    AUTO_LIMIT_US,
    CLIENT,
    RELAY,
    UPSTREAM,
    BusyPoll,
    usable_cpus,
    window_for,
)
from tests.support.loops import Scenario


async def cpu_seconds_while_waiting(seconds: float) -> float:
    before = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - before


def share_of_a_core() -> float:
    """The share of one core this process gets now: a spin's CPU time over its wall time. On a
    machine busy with other work, a polling loop gets no more than this."""
    start, before = time.monotonic(), time.process_time()
    while time.monotonic() - start < 0.1:
        pass
    return (time.process_time() - before) / (time.monotonic() - start)


def test_an_armed_loop_polls_until_its_window_ends_then_sleeps(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        assert await cpu_seconds_while_waiting(0.2) < 0.05  # a loop at rest sleeps
        share = share_of_a_core()
        BusyPoll(0.3).arm()
        polling = await cpu_seconds_while_waiting(0.25)
        await asyncio.sleep(0.1)  # the window ends
        after = await cpu_seconds_while_waiting(0.2)
        assert polling > 0.4 * 0.25 * share, (polling, share)  # busy most of the window
        assert after < 0.05, after

    run(scenario)


def test_each_arm_extends_the_window(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        share = share_of_a_core()
        poll = BusyPoll(0.15)
        poll.arm()
        await asyncio.sleep(0.1)
        poll.arm()  # now polling until 0.25 s
        await asyncio.sleep(0.08)
        still = await cpu_seconds_while_waiting(0.05)  # 0.18 to 0.23 s: past the first window
        assert still > 0.4 * 0.05 * share, (still, share)

    run(scenario)


def test_a_long_sleep_stops_polling_until_a_short_one(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        poll = BusyPoll(0.05)
        poll.arm()
        await asyncio.sleep(0.15)  # the window ends, and the loop sleeps past the limit
        poll.arm()  # so this wait (again for a client) is not polled
        assert await cpu_seconds_while_waiting(0.04) < 0.02
        assert poll.window(CLIENT) == 0
        poll.arm()  # at once: a short sleep, so a window of an eighth of the limit
        assert poll.window(CLIENT) == 0.05 / 8
        assert poll.window(UPSTREAM) == 0.05  # the other kind of wait keeps its own

    run(scenario)


Waits = list[tuple[int, float]]


def replay(poll: BusyPoll, waits: Waits, per: int = 2) -> tuple[dict[int, float], float]:
    """Drives `poll` as a loop would through a write before each of `waits`: (what the write
    waits for, how long until the next write). Gives the share of each kind of wait that
    ended while polling, and the seconds polled per request (`per` waits)."""
    now, polled, until = 0.0, 0.0, None  # polling until `until`; None: asleep
    covered = {CLIENT: 0, UPSTREAM: 0, RELAY: 0}
    for awaited, wait in waits:
        if poll.start(now, awaited) or until is not None:
            until = now + poll.window(awaited)
        then = now + wait
        if until is not None and then < until:  # the next write came while polling
            covered[awaited] += 1
            polled += wait
        elif until is not None:  # the window ended first: the loop slept until `then`
            poll.stop(until)
            polled += until - now
            until = None
        now = then
    count = {kind: sum(1 for k, _ in waits if k == kind) or 1 for kind in covered}
    return {kind: covered[kind] / count[kind] for kind in covered}, polled / len(waits) * per


LIMIT = 300e-6


def requests(upstream: float, client: float, n: int = 500) -> Waits:
    """`n` requests at one connection: each wait for the upstream's answer, then the client's."""
    return [(UPSTREAM, upstream), (CLIENT, client)] * n


def test_answers_within_the_limit_are_polled_for() -> None:
    covered, polled = replay(BusyPoll(LIMIT), requests(upstream=100e-6, client=250e-6))
    assert min(covered[UPSTREAM], covered[CLIENT]) > 0.99, covered
    assert polled < 360e-6, polled  # what the waits took, no more


def test_answers_mostly_within_the_limit_are_still_polled_for_at_the_median() -> None:
    rng = random.Random(6)  # one wait in twenty takes 2 ms: a slow answer now and then
    waits = [
        (kind, 2e-3 if rng.random() < 0.05 else rng.uniform(80e-6, 250e-6))
        for kind in (UPSTREAM, CLIENT) * 1000
    ]
    covered, _ = replay(BusyPoll(LIMIT), waits)
    assert min(covered[UPSTREAM], covered[CLIENT]) > 0.6, covered


def test_a_slow_engine_is_not_polled_for_and_its_quick_clients_are() -> None:
    """A 25 ms engine, and the client's next request 80 µs after each answer."""
    poll = BusyPoll(LIMIT)
    covered, polled = replay(poll, requests(upstream=25e-3, client=80e-6))
    assert covered[CLIENT] > 0.99, covered
    assert covered[UPSTREAM] == 0, covered
    assert polled < 80e-6 * 1.05, polled  # the clients' waits, and after the first no more
    assert poll.window(UPSTREAM) == 0


def test_clients_seconds_apart_are_not_polled_for_and_a_quick_upstream_is() -> None:
    """A stream's first token: a fast upstream's answer, after a client idle for a second."""
    poll = BusyPoll(LIMIT)
    covered, polled = replay(poll, requests(upstream=150e-6, client=1.0, n=100))
    assert covered[UPSTREAM] > 0.98, covered
    assert covered[CLIENT] == 0, covered
    assert polled < 150e-6 + LIMIT / 100 * 1.05, polled  # and the first client wait, polled
    assert poll.window(CLIENT) == 0


def test_a_stream_polls_for_its_first_event_and_the_next_request_not_between_events() -> None:
    """One stream at a time: a fast upstream's first event, three more 100 ms apart, and the
    client's next stream 100 µs after the last."""
    stream = [(UPSTREAM, 150e-6), (RELAY, 0.1), (RELAY, 0.1), (RELAY, 0.1), (CLIENT, 100e-6)]
    poll = BusyPoll(LIMIT)
    covered, polled = replay(poll, stream * 100, per=len(stream))
    assert covered[UPSTREAM] > 0.98, covered
    assert covered[CLIENT] > 0.98, covered
    assert covered[RELAY] == 0, covered
    assert polled < 250e-6 + LIMIT / 100 * 1.05, polled  # and the first relay's wait, polled
    assert poll.window(RELAY) == 0


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, 2.0),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu.max": "300000 100000\n"}, 2.0),  # more than the affinity: the affinity
        ({"cpu.max": "garbled\n"}, 2.0),
        ({}, 2.0),  # no cgroup files: the affinity
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ],
)
def test_usable_cpus_is_the_affinity_capped_by_the_cgroup_quota(
    tmp_path: Path, files: dict[str, str], expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cgroup v2's cpu.max, else v1's cfs quota and period, as the compose entrypoint reads."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert usable_cpus(tmp_path) == expected


def test_auto_polls_only_when_each_worker_has_a_cpu() -> None:
    assert window_for("auto", workers=2, cpus=2.0) == AUTO_LIMIT_US / 1e6
    assert window_for("auto", workers=2, cpus=1.5) == 0  # a shared CPU: spinning takes it away
    assert window_for("auto", workers=1, cpus=0.5) == 0
    assert window_for(0, workers=1, cpus=2.0) == 0
    assert window_for(1000, workers=4, cpus=1.0) == 1000e-6  # an explicit limit is obeyed
