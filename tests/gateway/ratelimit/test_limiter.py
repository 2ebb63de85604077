"""gateway.ratelimit.limiter: which budgets a request counts against, OpenAI's headers and 429,
and counting in this process while the Redis named for sharing cannot be reached."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from backends.errors import RateLimited
from gateway.ratelimit.config import RateLimits
from gateway.ratelimit.limiter import RateLimiter, RatePolicy, duration
from tests.engines.vllm_engine import free_port

KEY_A, KEY_B = hashlib.sha256(b"key-a").digest(), hashlib.sha256(b"key-b").digest()


def policy(keys: RateLimits, **routes: RateLimits) -> RatePolicy:
    return RatePolicy(RateLimiter(), keys, routes)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0ms"), (0.0204, "20ms"), (1.0, "1s"), (1.5, "1.5s"), (59.9996, "1m0s"), (360, "6m0s"),
     (61.25, "1m1.25s")],
)  # fmt: skip
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_no_limit_set_is_no_policy() -> None:
    unset = policy(RateLimits(), chat=RateLimits())
    assert not unset.enabled
    assert asyncio.run(unset.admit(KEY_A, "chat")) is None


def test_an_answer_carries_the_tighter_budget_in_openai_headers() -> None:
    limits = policy(
        RateLimits(requests_per_minute=100, tokens_per_minute=1000),
        chat=RateLimits(requests_per_minute=10),
    )

    async def scenario() -> dict[bytes, bytes]:
        grant = await limits.admit(KEY_A, "chat")
        assert grant is not None
        return dict(grant.headers)

    headers = asyncio.run(scenario())
    assert headers[b"x-ratelimit-limit-requests"] == b"10"  # the route's budget is tighter
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"
    assert headers[b"x-ratelimit-reset-requests"] == b"6s"  # one request back at 10 a minute
    assert headers[b"x-ratelimit-limit-tokens"] == b"1000"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"1000"
    assert headers[b"x-ratelimit-reset-tokens"] == b"0ms"


def test_a_refusal_is_openai_s_429_with_retry_after_naming_no_key() -> None:
    limits = policy(RateLimits(requests_per_minute=2))

    async def scenario() -> RateLimited:
        for _ in range(2):
            assert await limits.admit(KEY_A, "chat") is not None
        with pytest.raises(RateLimited) as refused:
            await limits.admit(KEY_A, "chat")
        return refused.value

    error = asyncio.run(scenario())
    assert (error.status_code, error.code, error.error_type) == (
        429,
        "rate_limit_exceeded",
        "requests",
    )
    assert error.headers["Retry-After"] == "30"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-reset-requests"] == "30s"
    assert "requests per minute on this API key: limit 2" in error.message
    assert KEY_A.hex()[:8] not in error.message
    assert limits.limiter.refused == {("chat", "requests"): 1}


def test_each_key_has_its_own_budget_on_every_route_and_on_each_route() -> None:
    limits = policy(RateLimits(requests_per_minute=3), chat=RateLimits(requests_per_minute=1))

    async def scenario() -> list[str]:
        outcomes = []
        for key, route in [(KEY_A, "chat"), (KEY_A, "chat"), (KEY_B, "chat"), (KEY_A, "tagger"),
                           (KEY_A, "tagger"), (KEY_A, "tagger")]:  # fmt: skip
            try:
                await limits.admit(key, route)
                outcomes.append("ok")
            except RateLimited as exc:
                outcomes.append("route" if "this API key on 'chat'" in exc.message else "key")
        return outcomes

    assert asyncio.run(scenario()) == ["ok", "route", "ok", "ok", "ok", "key"]


def test_an_unreachable_redis_means_counting_in_this_process_and_saying_so() -> None:
    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    limits = RatePolicy(limiter, RateLimits(requests_per_minute=2), {})

    async def scenario() -> list[bool]:
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(await limits.admit(KEY_A, "chat") is not None)
            except RateLimited:
                outcomes.append(False)
        await limiter.close()
        return outcomes

    assert asyncio.run(scenario()) == [True, True, False]  # the local count still limits
    assert not limiter.shared_up
    status = limiter.status()
    assert "Redis is unreachable" in str(status["counted"])
    assert isinstance(status["redis_down_since"], float)
