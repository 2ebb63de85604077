"""The counts of `gateway.ratelimit.counters` in Redis, shared by every process and replica.

One Lua script admits a request (checks and takes from every budget at once, atomically, on
Redis' clock) and one releases it, so each request costs two round trips. Requests in flight
are leases in a sorted set, scored by when they expire (`lease_ttl` after admission): a
process that dies does not hold its clients' slots for longer than that. A bucket's key
expires when it would be full again, which is the same as no key.

Needs `pip install 'pika-gateway[rate-limit-redis]'`. Every failure to reach Redis is raised
as `SharedUnavailable`; the limiter then counts locally (`gateway.ratelimit.limiter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.ratelimit.counters import LIMITS, Budget, Level, Verdict

TIMEOUT = 0.25  # seconds for a connection or a command: past it, Redis counts as down
CONNECTIONS = 32  # per process: two short scripts per request keep a few busy
PREFIX = "gateway:ratelimit:"

# Levels are returned as strings: Redis turns a Lua number into an integer.
_REFILL = """
local now
do local t = redis.call('TIME'); now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 end
local function refill(key, per_minute)
  local v = redis.call('HMGET', key, 'l', 'u')
  if not v[1] then return per_minute end
  return math.min(per_minute, tonumber(v[1]) + (now - tonumber(v[2])) * per_minute / 60000)
end
local function keep(key, level, per_minute)
  redis.call('HSET', key, 'l', tostring(level), 'u', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((per_minute - level) * 60000 / per_minute) + 1000)
end
"""
ADMIT = (
    _REFILL
    + """
local lease, ttl, n = ARGV[1], tonumber(ARGV[2]), #KEYS / 3
local requests, tokens = {}, {}
for i = 1, n do
  local rpm, tpm, most = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  requests[i], tokens[i] = -1, -1
  if rpm > 0 then
    requests[i] = refill(KEYS[3 * i - 2], rpm)
    if requests[i] < 1 then return {0, i, 'requests', tostring((1 - requests[i]) * 60 / rpm)} end
  end
  if tpm > 0 then
    tokens[i] = refill(KEYS[3 * i - 1], tpm)
    if tokens[i] <= 0 then return {0, i, 'tokens', tostring((1 - tokens[i]) * 60 / tpm)} end
  end
  if most > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 * i], '-inf', now)
    if redis.call('ZCARD', KEYS[3 * i]) >= most then return {0, i, 'concurrent', '1'} end
  end
end
local out = {1, 0, '', '0'}
for i = 1, n do
  local rpm, tpm, most = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  if rpm > 0 then requests[i] = requests[i] - 1; keep(KEYS[3 * i - 2], requests[i], rpm) end
  if tpm > 0 then keep(KEYS[3 * i - 1], tokens[i], tpm) end
  if most > 0 then
    redis.call('ZADD', KEYS[3 * i], now + ttl, lease)
    redis.call('PEXPIRE', KEYS[3 * i], ttl + 1000)
  end
  table.insert(out, tostring(requests[i]))
  table.insert(out, tostring(tokens[i]))
end
return out
"""
)
RELEASE = (
    _REFILL
    + """
local lease, used = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  redis.call('ZREM', KEYS[2 * i], lease)
  local tpm = tonumber(ARGV[2 + i])
  if tpm > 0 and used > 0 then keep(KEYS[2 * i - 1], refill(KEYS[2 * i - 1], tpm) - used, tpm) end
end
return 0
"""
)


class SharedUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


class RedisCounters:
    """`Counters` in the Redis at `url`; `lease_ttl`: seconds a request may hold its slot."""

    def __init__(self, url: str, lease_ttl: float) -> None:
        # At most CONNECTIONS to Redis; a request waits for one (up to the timeout) rather
        # than opening more, so a flood of requests is not a flood of connections.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=CONNECTIONS,
            timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
        )
        # No retry: a local count now beats a shared one late.
        self.client = aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._lease_ms = int(lease_ttl * 1000)
        self._admit = self.client.register_script(ADMIT)
        self._release = self.client.register_script(RELEASE)

    async def admit(self, budgets: Sequence[Budget], lease: str) -> Verdict:
        keys: list[str] = []
        args: list[str | int] = [lease, self._lease_ms]
        for budget in budgets:
            keys += [f"{PREFIX}{budget.name}:{suffix}" for suffix in ("r", "t", "c")]
            args += _limits(budget)
        found = await self._call(self._admit, keys, args)
        if not int(found[0]):
            limit = found[2].decode()
            assert limit in LIMITS
            return Verdict(False, int(found[1]) - 1, limit, float(found[3]))
        verdict = Verdict(True)
        for index, budget in enumerate(budgets):
            requests, tokens = float(found[4 + 2 * index]), float(found[5 + 2 * index])
            verdict.requests.append(_level(budget.limits.requests_per_minute, requests))
            verdict.tokens.append(_level(budget.limits.tokens_per_minute, tokens))
        return verdict

    async def release(self, budgets: Sequence[Budget], lease: str, tokens: int) -> None:
        keys: list[str] = []
        for budget in budgets:
            keys += [f"{PREFIX}{budget.name}:t", f"{PREFIX}{budget.name}:c"]
        per_minute = [budget.limits.tokens_per_minute or 0 for budget in budgets]
        await self._call(self._release, keys, [lease, tokens, *per_minute])

    async def forget_connections(self) -> None:
        """Closes every pooled connection: after Redis went away they are dead (half-closed
        by the server), and would linger until each was tried again."""
        with contextlib.suppress(RedisError, OSError):
            await self.client.connection_pool.disconnect()

    async def ping(self) -> None:
        with _unreachable():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)  # the pool is ours

    async def _call(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> list[Any]:
        with _unreachable():
            found: list[Any] = await script(keys=keys, args=args)
            return found


@contextlib.contextmanager
def _unreachable() -> Iterator[None]:
    """Redis' errors, and the socket's, as `SharedUnavailable` (their type, never a message)."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise SharedUnavailable(type(exc).__name__) from exc


def _limits(budget: Budget) -> list[str | int]:
    limits = budget.limits
    return [
        limits.requests_per_minute or 0,
        limits.tokens_per_minute or 0,
        limits.concurrent or 0,
    ]


def _level(per_minute: int | None, level: float) -> Level | None:
    if per_minute is None:
        return None
    return Level(per_minute, max(int(level // 1), 0), (per_minute - level) * 60 / per_minute)
