"""gateway.ratelimit.shared against a real redis-server: the same counts as in one process,
kept by Redis for every process; leases that expire; Redis stopped and started again."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from gateway.ratelimit.config import RateLimits
from gateway.ratelimit.counters import Budget, Verdict
from gateway.ratelimit.limiter import PROBE_INTERVAL, RateLimiter, RatePolicy
from gateway.ratelimit.shared import TIMEOUT, RedisCounters, SharedUnavailable
from tests.support.redis import RedisServer

pytestmark = pytest.mark.slow  # starts redis-server (and gateway processes)


def budget(**limits: int) -> Budget:
    return Budget(f"test:{uuid.uuid4().hex}", RateLimits.model_validate(limits), "this API key")


async def admit_many(counters: RedisCounters, budgets: list[Budget], count: int) -> list[Verdict]:
    return [await counters.admit(budgets, uuid.uuid4().hex) for _ in range(count)]


def test_requests_burst_to_the_limit_then_keep_to_its_rate(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        counters = RedisCounters(redis_server.url, lease_ttl=60)
        limited = [budget(requests_per_minute=60)]
        verdicts = await admit_many(counters, limited, 61)
        assert [verdict.admitted for verdict in verdicts].count(True) == 60
        refused = verdicts[-1]
        assert (refused.admitted, refused.limit) == (False, "requests")
        assert 0.8 < refused.retry_after <= 1.0  # one a second, some of it refilled meanwhile
        first = verdicts[0].requests[0]
        assert first is not None
        assert (first.limit, first.remaining) == (60, 59)
        await asyncio.sleep(1.05)
        assert (await counters.admit(limited, "later")).admitted
        await counters.close()

    asyncio.run(scenario())


def test_tokens_are_taken_at_release_and_a_debt_refuses(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        counters = RedisCounters(redis_server.url, lease_ttl=60)
        limited = [budget(tokens_per_minute=600)]
        assert (await counters.admit(limited, "one")).admitted
        await counters.release(limited, "one", 900)
        refused = await counters.admit(limited, "two")
        assert (refused.admitted, refused.limit) == (False, "tokens")
        assert 29 < refused.retry_after <= 30.1  # 300 in debt at 10 a second
        await counters.close()

    asyncio.run(scenario())


def test_requests_in_flight_are_leases_released_or_expired(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        counters = RedisCounters(redis_server.url, lease_ttl=0.5)
        limited = [budget(concurrent=1)]
        assert (await counters.admit(limited, "one")).admitted
        refused = await counters.admit(limited, "two")
        assert (refused.admitted, refused.limit) == (False, "concurrent")
        await counters.release(limited, "one", 0)
        assert (await counters.admit(limited, "three")).admitted  # released
        await asyncio.sleep(0.6)  # "three" is never released: a process that died
        assert (await counters.admit(limited, "four")).admitted
        await counters.close()

    asyncio.run(scenario())


def test_budgets_admit_together_or_not_at_all(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        counters = RedisCounters(redis_server.url, lease_ttl=60)
        key, route = budget(requests_per_minute=10), budget(concurrent=1)
        assert (await counters.admit([key, route], "one")).admitted
        refused = await counters.admit([key, route], "two")
        assert (refused.admitted, refused.refused_by, refused.limit) == (False, 1, "concurrent")
        left = (await counters.admit([key], "three")).requests[0]
        assert left is not None
        assert left.remaining == 8  # the refused request took nothing
        await counters.close()

    asyncio.run(scenario())


def test_redis_going_away_and_coming_back(tmp_path: Path) -> None:
    """Unreachable: an error within the timeout, and the limiter counts here; back: shared."""
    with RedisServer(tmp_path) as server:
        limiter = RateLimiter(server.url)
        limits = RatePolicy(limiter, RateLimits(requests_per_minute=1000), {})

        def shared() -> bool:
            return limiter.shared_up

        async def scenario() -> None:
            assert await limits.admit(b"k", "chat") is not None
            assert shared()
            server.stop()
            assert limiter.shared is not None
            started = time.monotonic()
            with pytest.raises(SharedUnavailable):
                await limiter.shared.admit([budget(requests_per_minute=5)], "x")
            assert time.monotonic() - started < 2 * TIMEOUT + 0.5
            grant = await limits.admit(b"k", "chat")  # served, counted here
            assert grant is not None
            assert grant.counters is limiter.local
            assert not shared()
            server.start()
            await asyncio.sleep(PROBE_INTERVAL * 2.5)
            assert shared()
            await limits.release(grant, 0)  # released where it was counted
            assert (await limits.admit(b"k", "chat")) is not None
            await limiter.close()

        asyncio.run(scenario())
