"""Limits shared through a real Redis by two `gateway serve` processes: together they keep to
the limit (within 5 %), where each counting alone lets through twice as much; and with Redis
stopped they keep serving by their own counts, saying so in `/metrics` and `/ready`, until it
is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.gateway.test_cli import Fake, chat
from tests.support.redis import RedisServer
from tests.support.servers import gateway_process

KEY = "the-chat-app-key"
PER_MINUTE = 1200  # 20 a second, for both gateways together
OFFERED = 60.0  # requests a second sent to each gateway: three times the limit together
SECONDS = 8.0
BODY = json.dumps(chat("hello", stream=False)).encode()


pytestmark = pytest.mark.slow  # starts redis-server (and gateway processes)


def environment(fake: Fake, redis_url: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_BACKENDS": json.dumps({"main": {"kind": "vllm", "url": fake[1].url}}),
        "GATEWAY_PRIMARY": "main",
        "GATEWAY_API_KEYS": json.dumps([KEY]),
        "GATEWAY_RATE_LIMITS": json.dumps({"requests_per_minute": PER_MINUTE}),
        "GATEWAY_PROBE_INTERVAL": "0",
    }
    if redis_url is not None:
        env["GATEWAY_RATE_LIMIT_URL"] = redis_url
    return env


@contextlib.contextmanager
def two_gateways(env: dict[str, str], folder: Path) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        urls = []
        for name in ("first", "second"):
            records = {"GATEWAY_RECORDS_URL": f"sqlite:///{folder / name}.db"}
            log = stack.enter_context((folder / f"{name}.log").open("w"))
            url, _ = stack.enter_context(gateway_process(env | records, output=log))
            urls.append(url)
        yield urls


async def admitted(urls: list[str]) -> int:
    """Drains the budget, then offers `OFFERED` requests a second to each gateway for
    `SECONDS`: how many of those were admitted (200), all gateways together."""
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(url: str) -> int:
            async with session.post(url + "/v1/chat/completions", data=BODY) as response:
                await response.read()
                return response.status

        while True:  # the burst a full bucket allows, until both gateways refuse
            statuses = await asyncio.gather(*(one(url) for url in urls for _ in range(50)))
            if statuses.count(429) >= len(statuses) // 2:
                break
        start, sent = time.monotonic() + 0.1, []
        for i in range(int(SECONDS * OFFERED)):
            await asyncio.sleep(max(start + i / OFFERED - time.monotonic(), 0.0))
            sent += [asyncio.ensure_future(one(url)) for url in urls]
        statuses = await asyncio.gather(*sent)
    assert set(statuses) <= {200, 429}, set(statuses)
    return statuses.count(200)


def test_two_gateways_sharing_redis_keep_to_the_limit_together(
    fake_upstream: Fake, redis_server: RedisServer, tmp_path: Path, run_summary: list[str]
) -> None:
    expected = PER_MINUTE / 60 * SECONDS
    with two_gateways(environment(fake_upstream, redis_server.url), tmp_path) as urls:
        shared = asyncio.run(admitted(urls))
    assert abs(shared - expected) <= 0.05 * expected, (shared, expected)
    (tmp_path / "alone").mkdir()
    with two_gateways(environment(fake_upstream, None), tmp_path / "alone") as urls:
        alone = asyncio.run(admitted(urls))
    assert alone > 1.8 * expected, (alone, expected)  # the test tells shared from not
    run_summary.append(
        f"rate limit {PER_MINUTE}/min over {SECONDS:g} s, two gateways: {shared} admitted "
        f"sharing Redis, {alone} counting alone (limit's share {expected:g})"
    )


def shared_gauge(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("gateway_rate_limit_shared "):
            return float(line.split()[1])
    raise AssertionError("gateway_rate_limit_shared is not in /metrics")


def test_with_redis_down_the_gateway_serves_by_its_own_count_and_says_so(
    fake_upstream: Fake, tmp_path: Path
) -> None:
    with RedisServer(tmp_path) as redis:
        env = environment(fake_upstream, redis.url)
        env["GATEWAY_RECORDS_URL"] = f"sqlite:///{tmp_path / 'pairs.db'}"
        headers = {"authorization": f"Bearer {KEY}"}
        log = (tmp_path / "gateway.log").open("w")
        with log, gateway_process(env, output=log) as (url, _):

            def post() -> httpx.Response:
                return httpx.post(url + "/v1/chat/completions", content=BODY, headers=headers)

            assert post().status_code == 200
            assert shared_gauge(url) == 1
            redis.stop()
            answers = [post() for _ in range(5)]
            assert [answer.status_code for answer in answers] == [200] * 5  # clients see nothing
            assert answers[-1].headers["x-ratelimit-remaining-requests"]  # limited still
            assert shared_gauge(url) == 0
            ready = httpx.get(url + "/ready").json()["rate_limits"]
            assert "Redis is unreachable" in ready["counted"]
            redis.start()
            deadline = time.monotonic() + 10
            while shared_gauge(url) != 1:
                assert time.monotonic() < deadline, "the gateway never saw Redis come back"
                time.sleep(0.2)
            assert httpx.get(url + "/ready").json()["rate_limits"] == {"counted": "shared (Redis)"}
            assert post().status_code == 200
        logged = (tmp_path / "gateway.log").read_text()
        assert "Redis unreachable (ConnectionError)" in logged
        assert "Redis is back" in logged
