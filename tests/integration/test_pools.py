"""A replica pool of three real vLLM engines behind the gateway: load spreads, a replica killed
under load costs clients nothing but the streams it was serving (each ends with an SSE error
event), it rejoins when it is back, and a replica that hangs is left out by its probe."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine, sum_samples
from tests.support.fake_upstream import MuteUpstream
from tests.support.servers import ThreadedServer

SUCCESS = "vllm:request_success_total"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Pika ơi, kể chuyện đi"}]


def pool_gateway(urls: list[str], tmp_path: Path) -> ThreadedServer:
    # Three engines share two cores: a whole answer under the kill test's load took up to
    # 5.4 s on a quiet machine, and its first byte is its last, so the read timeout is ample.
    backend = VllmSettings(
        urls=urls, model=TINY_MODEL, connect_timeout=0.5, read_timeout=60.0,
        eject_failures=2, eject_cooldown=2.0, circuit_failures=50,
    )  # fmt: skip
    settings = Settings(
        backends={"pool": backend}, primary="pool", models=[TINY_MODEL], probe_interval=0.5,
        records_url=f"sqlite:///{tmp_path / 'pairs.db'}",
    )  # fmt: skip
    return ThreadedServer(create_app(settings))


@pytest.fixture
def gateway(vllm_replicas: list[VllmEngine], tmp_path: Path) -> Iterator[str]:
    with pool_gateway([engine.url for engine in vllm_replicas], tmp_path) as gw:
        yield gw.url


def successes(engines: list[VllmEngine]) -> list[float]:
    return [engine.metric(SUCCESS) for engine in engines]


def ask(client: openai.OpenAI, max_tokens: int = 4) -> str:
    answer = client.chat.completions.create(
        model=TINY_MODEL, messages=ASK, max_tokens=max_tokens, temperature=0
    )
    return str(answer.choices[0].finish_reason)


def test_load_spreads_over_the_replicas(vllm_replicas: list[VllmEngine], gateway: str) -> None:
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="x", max_retries=0)
    # One at a time every replica is idle, so each pick is a fair draw among three: 12 each on
    # average, fewer than 3 for one of them about once in 4,000 runs.
    before = successes(vllm_replicas)
    finished = [ask(client) for _ in range(36)]
    idle = [a - b for a, b in zip(successes(vllm_replicas), before, strict=True)]
    assert min(idle) >= 3, idle
    # Six at once: the least loaded of two draws wins, so a replica the shared CPU slows
    # takes less, but every one takes part.
    before = successes(vllm_replicas)
    with ThreadPoolExecutor(6) as pool:
        finished += pool.map(lambda _: ask(client), range(36))
    busy = [a - b for a, b in zip(successes(vllm_replicas), before, strict=True)]
    assert min(busy) >= 1, busy
    assert set(finished) <= {"stop", "length"}
    served = [a + b for a, b in zip(idle, busy, strict=True)]
    assert sum(served) == 72
    # The gateway's own count per endpoint agrees with each engine's.
    text = httpx.get(gateway + "/metrics").text
    counted = [
        sum_samples(text, "gateway_endpoint_calls_total",
                    {"endpoint": e.url.removeprefix("http://"), "outcome": "answered"})
        for e in vllm_replicas
    ]  # fmt: skip
    assert counted == served
    client.close()


@dataclass
class Outcomes:
    """What each client of the load saw, with when each cut stream was asked for."""

    completed: int = 0
    slowest: float = 0.0  # seconds, of a whole answer (no byte before its end): vs read_timeout
    failures: list[str] = field(default_factory=list)  # anything but a cut stream
    cut_streams: list[float] = field(default_factory=list)  # when each cut stream started
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(client: openai.OpenAI, stop: threading.Event, seen: Outcomes, n: int) -> None:
    """Alternates streamed and whole requests until told to stop."""
    stream = n % 2 == 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            if stream:
                events = client.chat.completions.create(
                    model=TINY_MODEL, messages=ASK, max_tokens=300, stream=True,
                    extra_body={"ignore_eos": True},
                )  # fmt: skip
                for _ in events:
                    pass
            else:
                ask(client, max_tokens=16)
            with seen.lock:
                seen.completed += 1
                if not stream:
                    seen.slowest = max(seen.slowest, time.monotonic() - started)
        except openai.APIError as exc:
            with seen.lock:
                if stream and type(exc) is openai.APIError:  # an SSE error event, after a 200
                    seen.cut_streams.append(started)
                else:
                    elapsed = time.monotonic() - started
                    seen.failures.append(f"{type(exc).__name__}: {exc} (after {elapsed:.1f} s)")
        stream = not stream


def test_a_replica_killed_under_load_costs_only_its_streams_and_rejoins(
    vllm_replicas: list[VllmEngine], gateway: str, run_summary: list[str]
) -> None:
    victim = vllm_replicas[2]
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="x", max_retries=0)
    seen, stop = Outcomes(), threading.Event()
    try:
        with ThreadPoolExecutor(6) as pool:
            running = [pool.submit(load, client, stop, seen, n) for n in range(6)]
            time.sleep(4.0)
            killed_at = time.monotonic()
            victim.kill()
            time.sleep(6.0)
            stop.set()
            for future in running:
                future.result()
    finally:
        victim.start()  # on its port again, whatever happened: later tests use it
    assert seen.failures == []
    # Only streams already under way when the replica died were cut, each with an error event.
    assert all(first < killed_at for first in seen.cut_streams), (seen.cut_streams, killed_at)
    assert seen.completed > 10
    run_summary.append(
        f"pool kill: {seen.completed} requests completed (slowest whole {seen.slowest:.1f} s), "
        f"{len(seen.cut_streams)} streams cut"
    )
    deadline = time.monotonic() + 30
    while victim.metric(SUCCESS) == 0:  # a new process: any success is the pool's
        assert time.monotonic() < deadline, "the replica never got traffic again"
        ask(client)
    client.close()


def test_a_hanging_replica_is_left_out_by_its_probe(
    vllm_engine: VllmEngine, tmp_path: Path
) -> None:
    with (
        MuteUpstream() as silent,
        pool_gateway([silent.url, vllm_engine.url], tmp_path) as gw,
    ):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        before = vllm_engine.metric(SUCCESS)
        finished = [ask(client) for _ in range(12)]
        assert set(finished) <= {"stop", "length"}
        assert vllm_engine.metric(SUCCESS) - before == 12
        text = httpx.get(gw.url + "/metrics").text
        hung = {"endpoint": silent.url.removeprefix("http://")}
        assert sum_samples(text, "gateway_endpoint_out", hung) == 1
        assert sum_samples(text, "gateway_endpoint_calls_total", hung) == 0
        ready = httpx.get(gw.url + "/ready").json()["backends"]["pool"]
        assert ready["ready"]
        assert ready["detail"].startswith("1 of 2 endpoints ready")
        client.close()
