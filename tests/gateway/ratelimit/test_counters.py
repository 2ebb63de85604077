"""gateway.ratelimit.counters in this process, on a clock the test moves: buckets that burst
to their limit and refill at its rate, tokens taken after the answer, requests in flight, and
budgets that admit together or not at all."""

from __future__ import annotations

import pytest

from gateway.ratelimit.config import RateLimits
from gateway.ratelimit.counters import Budget, LocalCounters


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(name: str = "key:a", **limits: int) -> Budget:
    return Budget(name, RateLimits.model_validate(limits), "this API key")


def test_requests_burst_to_the_limit_then_keep_to_its_rate() -> None:
    clock = Clock()
    counters, limited = LocalCounters(clock), [budget(requests_per_minute=60)]
    admitted = [counters.admit_now(limited) for _ in range(61)]
    assert [verdict.admitted for verdict in admitted] == [True] * 60 + [False]
    assert admitted[0].requests[0] is not None
    assert (admitted[0].requests[0].limit, admitted[0].requests[0].remaining) == (60, 59)
    assert admitted[-1].limit == "requests"
    assert admitted[-1].retry_after == pytest.approx(1.0)  # one a second
    clock.now += 0.5
    assert not counters.admit_now(limited).admitted
    clock.now += 0.5
    again = counters.admit_now(limited)
    assert again.admitted
    assert again.requests[0] is not None
    assert again.requests[0].remaining == 0
    assert again.requests[0].reset == pytest.approx(60.0)  # a minute until full again


def test_tokens_are_taken_after_the_answer_and_a_debt_refuses_until_repaid() -> None:
    clock = Clock()
    counters, limited = LocalCounters(clock), [budget(tokens_per_minute=600)]
    first = counters.admit_now(limited)
    assert first.tokens[0] is not None
    assert first.tokens[0].remaining == 600  # nothing known until the answer
    import asyncio

    asyncio.run(counters.release(limited, "lease", 900))  # 300 tokens in debt
    refused = counters.admit_now(limited)
    assert (refused.admitted, refused.limit) == (False, "tokens")
    assert refused.retry_after == pytest.approx(30.1)  # 301 tokens at 10 a second
    clock.now += 30.2
    assert counters.admit_now(limited).admitted


def test_requests_in_flight_are_counted_until_released() -> None:
    import asyncio

    counters, limited = LocalCounters(Clock()), [budget(concurrent=2)]
    assert counters.admit_now(limited).admitted
    assert counters.admit_now(limited).admitted
    refused = counters.admit_now(limited)
    assert (refused.admitted, refused.limit, refused.retry_after) == (False, "concurrent", 1.0)
    asyncio.run(counters.release(limited, "lease", 0))
    assert counters.admit_now(limited).admitted


def test_budgets_admit_together_or_not_at_all() -> None:
    clock = Clock()
    counters = LocalCounters(clock)
    key, route = budget("key:a", requests_per_minute=10), budget("route:r:a", concurrent=1)
    assert counters.admit_now([key, route]).admitted
    refused = counters.admit_now([key, route])
    assert (refused.admitted, refused.refused_by, refused.limit) == (False, 1, "concurrent")
    # The refused request took nothing from the key's budget: 9 are left, not 8.
    left = counters.admit_now([key])
    assert left.requests[0] is not None
    assert left.requests[0].remaining == 8


def test_each_budget_is_counted_apart() -> None:
    counters = LocalCounters(Clock())
    first, second = budget("key:a", requests_per_minute=1), budget("key:b", requests_per_minute=1)
    assert counters.admit_now([first]).admitted
    assert not counters.admit_now([first]).admitted
    assert counters.admit_now([second]).admitted
