"""backends.pool.balance: picking and ejection, on plain endpoint states and a fake clock."""

from __future__ import annotations

import random
from collections import Counter

from backends.base import Backend
from backends.pool.affinity import digest
from backends.pool.balance import Balancer, Endpoint, Rules
from backends.pool.stats import LocalStats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool(count: int, rules: Rules | None = None, clock: Clock | None = None) -> Balancer:
    balancer = Balancer(rules or Rules(), clock or Clock(), random.Random(7))
    stats = LocalStats()
    for n in range(count):
        name = f"10.0.0.{n}:8000"
        balancer.join(Endpoint(name, Backend.__new__(Backend), stats.endpoint("b", name)))  # type: ignore[type-abstract]
    return balancer


def picks(balancer: Balancer, times: int, key: int | None = None) -> Counter[str]:
    chosen: Counter[str] = Counter()
    for _ in range(times):
        endpoint = balancer.pick(key)
        assert endpoint is not None
        chosen[endpoint.name] += 1
    return chosen


def test_two_choices_never_pick_the_most_loaded_of_three() -> None:
    balancer = pool(3)
    busy, *idle = balancer.members
    busy.active = 5
    chosen = picks(balancer, 600)
    assert chosen[busy.name] == 0
    assert all(chosen[e.name] > 200 for e in idle)


def test_two_choices_spread_evenly_when_idle() -> None:
    chosen = picks(pool(3), 3000)
    assert all(800 < count < 1200 for count in chosen.values()), chosen


def test_round_robin_takes_each_in_turn_whatever_the_load() -> None:
    balancer = pool(3, Rules(balance="round_robin"))
    balancer.members[0].active = 50
    order = [e.name for e in (balancer.pick() for _ in range(6)) if e is not None]
    assert order[:3] == order[3:]
    assert sorted(order[:3]) == sorted(e.name for e in balancer.members)


def test_a_key_sticks_to_one_endpoint_until_it_is_loaded_beyond_the_bound() -> None:
    balancer = pool(3, Rules(affinity_max_load=1.5))
    key = digest("system prompt of the tagger")
    first = balancer.pick(key)
    assert first is not None
    assert picks(balancer, 50, key) == Counter({first.name: 50})
    # The bound: 1.5 times (the mean in flight + 1). 4 there: 1.5 * (4/3 + 1) = 3.5 <= 4.
    first.active = 4
    second = balancer.pick(key)
    assert second is not None
    assert second is not first
    first.active = 3  # 1.5 * (1 + 1) = 3: at the bound, so still moved
    assert balancer.pick(key) is second
    first.active = 2  # 1.5 * (2/3 + 1) = 2.5
    assert balancer.pick(key) is first


def test_keys_spread_and_only_a_leaving_endpoints_keys_move() -> None:
    balancer = pool(4)
    keys = [digest(f"prefix {n}") for n in range(400)]
    before = {key: balancer.pick(key) for key in keys}
    assert len({e.name for e in before.values() if e}) == 4
    gone = balancer.members[1]
    balancer.leave(gone)
    after = {key: balancer.pick(key) for key in keys}
    moved = [key for key in keys if after[key] is not before[key]]
    assert moved
    assert all(before[key] is gone for key in moved)


def test_failures_eject_for_the_cooldown_then_probation() -> None:
    clock = Clock()
    balancer = pool(3, Rules(eject_failures=3, eject_cooldown=10.0), clock)
    bad = balancer.members[0]
    assert [balancer.failed(bad) for _ in range(3)] == [False, False, True]
    assert bad not in balancer.rotation()
    assert picks(balancer, 100)[bad.name] == 0
    clock.now += 10.0
    assert bad in balancer.rotation()
    assert balancer.failed(bad)  # on probation: one failure is enough
    clock.now += 10.0
    balancer.succeeded(bad)
    assert [balancer.failed(bad) for _ in range(3)] == [False, False, True]


def test_never_more_than_the_share_is_ejected() -> None:
    balancer = pool(3, Rules(eject_failures=1, max_ejected_percent=50))
    first, second, third = balancer.members
    assert balancer.failed(first)
    assert not balancer.failed(second)  # 3 * 50 // 100 = 1 already out
    assert balancer.rotation() == [second, third]


def test_unready_endpoints_are_left_out_and_all_unready_means_any() -> None:
    balancer = pool(3)
    for endpoint in balancer.members[:2]:
        endpoint.ready = False
    assert balancer.rotation() == [balancer.members[2]]
    balancer.members[2].ready = False
    assert balancer.rotation() == balancer.members


def test_a_retry_avoids_the_endpoints_tried() -> None:
    balancer = pool(3)
    tried = balancer.members[:2]
    assert {balancer.pick(exclude=tried) for _ in range(20)} == {balancer.members[2]}
    assert balancer.pick(exclude=balancer.members) is not None  # all tried: any again
