"""A flood far beyond a backend's limits: fast 429s with Retry-After, no 5xx, bounded memory.

A real `gateway serve` process in front of an upstream that takes a second per answer, with
8 slots and 8 waiters; 1,500 clients arrive at once, three times over. Everything the gateway
cannot serve soon is refused at once instead of queued, so its memory does not grow with the
flood (issue 7, overload).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.test_cli import Fake, chat
from tests.support.servers import gateway_process

CLIENTS = 1500
BODY = json.dumps(chat("slow:1", stream=False)).encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def flooded(fake_upstream: Fake, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    backend = {"kind": "vllm", "url": fake_upstream[1].url, "max_concurrency": 8,
               "max_queue": 8, "queue_timeout": 0.5}  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {"GATEWAY_BACKENDS": json.dumps({"main": backend}), "GATEWAY_PRIMARY": "main"}
    with (tmp_path / "gateway.log").open("w") as log, gateway_process(env, output=log) as served:
        yield served


async def flood(url: str) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            async with session.post(url + "/v1/chat/completions", data=BODY) as response:
                await response.read()
                retry = response.headers.get("retry-after")
                outcomes[f"{response.status}{' retry-after' if retry else ''}"] += 1

        await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return outcomes


def test_a_flood_gets_fast_429s_and_the_gateway_stays_small(
    flooded: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = flooded
    asyncio.run(flood(url))  # warm: connections, buffers, metric series
    before = rss_mb(process.pid)
    for _ in range(3):
        outcomes = asyncio.run(flood(url))
        assert sum(outcomes.values()) == CLIENTS
        assert set(outcomes) <= {"200", "429 retry-after"}, outcomes  # never a 5xx
        assert outcomes["429 retry-after"] > CLIENTS * 0.9, outcomes
        assert outcomes["200"] >= 8, outcomes
    grown = rss_mb(process.pid) - before
    assert grown < 20, f"the gateway grew by {grown:.1f} MB over three floods"
    assert process.poll() is None
