"""A flood far beyond a backend's limits: fast 429s with Retry-After, no 5xx, bounded memory.

A real `gateway serve` process in front of an upstream that takes a second per answer, with
8 slots and 8 waiters; 1,500 clients arrive at once, three times over. Everything the gateway
cannot serve soon is refused at once instead of queued, so its memory does not grow with the
flood (issue 7, overload).

Two routes on one engine (issue 21): a flood on the chat model's route, capped by its
`max_concurrency`, gets 429s on that route only while the tagger's route keeps being served;
without the cap the same flood starves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


CHAT, TAGGER = "qwen3-chat", "phi-3-mini"
FLOODERS, LANES = 300, 4  # the chat route's clients; the tagger's, one request at a time each
FLOOD_SECONDS = 3.0


@pytest.fixture(params=[8, None], ids=["chat-capped", "uncapped"])
def two_routes(
    request: pytest.FixtureRequest, fake_upstream: Fake, tmp_path: Path
) -> Iterator[tuple[str, int | None]]:
    """One engine with 16 slots and 16 waiters behind two routes; the chat route capped at 8
    requests in flight, or not at all."""
    backend = {"kind": "vllm", "url": fake_upstream[1].url, "max_concurrency": 16,
               "max_queue": 16, "queue_timeout": 0.5}  # fmt: skip
    cap: int | None = request.param
    chat: dict[str, Any] = {"primary": "main"} | ({"max_concurrency": cap} if cap else {})
    routes = {CHAT: chat, TAGGER: {"primary": "main"}}
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {"GATEWAY_BACKENDS": json.dumps({"main": backend}), "GATEWAY_ROUTES": json.dumps(routes)}
    with (tmp_path / "gateway.log").open("w") as log, gateway_process(env, output=log) as served:
        yield served[0], cap


async def flood_one_route(url: str) -> tuple[Counter[str], Counter[str], set[str]]:
    """FLOODERS clients on the chat route (each waits about a second after a refusal, as the SDKs
    do on Retry-After, jittered so the refused do not come back in one wave) and, once the flood
    is on, LANES steady clients on the tagger's route: each route's outcomes, and the chat
    route's refusal messages."""
    outcomes: dict[str, Counter[str]] = {CHAT: Counter(), TAGGER: Counter()}
    refusals: set[str] = set()
    over = asyncio.Event()
    jitter = random.Random(20)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(model: str, cue: str, pause: float) -> None:
            body = {**chat(cue, stream=False), "model": model}
            while not over.is_set():
                async with session.post(url + "/v1/chat/completions", json=body) as response:
                    answer = await response.read()
                    retry = response.headers.get("retry-after")
                outcomes[model][f"{response.status}{' retry-after' if retry else ''}"] += 1
                if response.status != 200:
                    if model == CHAT:
                        refusals.add(json.loads(answer)["error"]["message"])
                    await asyncio.sleep(pause * jitter.uniform(0.5, 1.5))

        flood = [asyncio.create_task(client(CHAT, "slow:0.5", 1.0)) for _ in range(FLOODERS)]
        await asyncio.sleep(1.0)  # every engine slot and waiter taken, unless the cap holds
        lanes = [asyncio.create_task(client(TAGGER, "slow:0.2", 0.2)) for _ in range(LANES)]
        await asyncio.sleep(FLOOD_SECONDS)
        over.set()
        await asyncio.gather(*flood, *lanes)
    return outcomes[CHAT], outcomes[TAGGER], refusals


@pytest.mark.slow
def test_a_flood_on_one_route_is_refused_on_that_route_only(
    two_routes: tuple[str, int | None],
) -> None:
    url, cap = two_routes
    flooded, steady, refusals = asyncio.run(flood_one_route(url))
    assert set(flooded) <= {"200", "429 retry-after"}, flooded  # never a 5xx
    assert flooded["429 retry-after"] > flooded["200"] >= 8, flooded
    if cap is None:  # the control: the flood takes the engine's every slot and waiter
        assert steady["429 retry-after"] > 0, steady
        return
    assert set(steady) == {"200"}, steady
    assert steady["200"] >= LANES * 3, steady
    assert refusals == {f"the model '{CHAT}' is at its limit of {cap} requests in flight"}
