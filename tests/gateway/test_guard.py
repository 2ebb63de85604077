"""Overload, circuit breaking, fallback and retries: the gateway's answers when engines fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.guard import Circuit
from gateway.settings import Settings
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_consecutive_failures_and_a_probe_closes_it() -> None:
    clock = Clock()
    circuit = Circuit(failures=3, cooldown=10, clock=clock)
    circuit.failed()
    circuit.failed()
    circuit.succeeded()  # not consecutive
    for _ in range(3):
        assert circuit.allow()
        circuit.failed()
    assert circuit.state == "open"
    assert not circuit.allow()
    assert circuit.retry_after() == 10
    clock.now += 10
    assert circuit.state == "half_open"
    assert circuit.allow()  # one probe
    assert not circuit.allow()  # and only one
    circuit.failed()  # the probe failed: open again, for a full cooldown
    assert circuit.state == "open"
    clock.now += 10
    assert circuit.allow()
    circuit.succeeded()
    assert circuit.state == "closed"


def test_a_failed_readiness_probe_trips_the_circuit() -> None:
    circuit = Circuit(failures=5, cooldown=1, clock=Clock())
    circuit.trip()
    assert circuit.state == "open"


def chat(url: str, cue: str, **headers: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": cue}]}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


@pytest.fixture
def guarded(fake_upstream: Fake) -> Iterator[tuple[str, FakeUpstream]]:
    url = fake_upstream[1].url
    settings = Settings(
        backends={
            "main": VllmSettings(url=url, model=MODEL, max_concurrency=2, queue_timeout=0.2,
                                 circuit_failures=3, circuit_cooldown=1.0, retries=2),
            "spare": VllmSettings(url=url, model=MODEL),
        },
        primary="main", fallback="spare", probe_interval=0, records_url="sqlite:///:memory:",
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server:
        yield server.url, fake_upstream[0]


def test_overload_is_429_with_retry_after(guarded: tuple[str, FakeUpstream]) -> None:
    url, _ = guarded
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: chat(url, "slow:1"), range(6)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(200) == 2  # the concurrency limit
    busy = [response for response in responses if response.status_code == 429]
    assert len(busy) == 4
    assert all(response.headers["retry-after"] == "1" for response in busy)
    assert busy[0].json()["error"]["code"] == "overloaded"


def test_503_is_retried_then_failing_engine_opens_circuit_and_fallback_serves(
    guarded: tuple[str, FakeUpstream],
) -> None:
    url, fake = guarded
    before = fake.calls
    first = chat(url, "status:503")
    assert first.status_code == 503
    assert fake.calls - before == 3  # one attempt and two safe retries
    for _ in range(2):  # with the 503, three consecutive engine failures: the circuit opens
        assert chat(url, "status:500").status_code == 502
    served = chat(url, "hello")  # the circuit is open now: the fallback answers
    assert served.status_code == 200
    assert served.headers["x-gateway-backend"] == "spare"
    assert served.headers["x-gateway-fallback-for"] == "main"
    metrics = httpx.get(url + "/metrics").text
    assert 'gateway_fallback_total{backend="spare"} 1.0' in metrics
    time.sleep(1.1)  # cooldown: the next request probes the primary, and it is healthy
    probe = chat(url, "hello")
    assert probe.status_code == 200
    assert probe.headers["x-gateway-backend"] == "main"


def test_open_circuit_without_fallback_fails_fast_with_retry_after(fake_upstream: Fake) -> None:
    settings = Settings(
        backends={"main": VllmSettings(url=fake_upstream[1].url, model=MODEL, circuit_failures=2,
                                       circuit_cooldown=30, retries=0)},
        primary="main", probe_interval=0, records_url="sqlite:///:memory:",
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server:
        for _ in range(2):
            assert chat(server.url, "status:500").status_code == 502
        calls = fake_upstream[0].calls
        started = time.monotonic()
        refused = chat(server.url, "hello")
        assert time.monotonic() - started < 0.5
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "circuit_open"
        assert int(refused.headers["retry-after"]) >= 1
        assert fake_upstream[0].calls == calls  # the engine was left alone


def test_waiters_beyond_max_queue_get_429_at_once(fake_upstream: Fake) -> None:
    """One in flight, one waiting: a third request is refused without waiting, so a flood
    costs no memory; the waiter is still served when the slot frees."""
    settings = Settings(
        backends={"main": VllmSettings(url=fake_upstream[1].url, model=MODEL, max_concurrency=1,
                                       max_queue=1, queue_timeout=10)},
        primary="main", probe_interval=0, records_url="sqlite:///:memory:",
    )  # fmt: skip
    fake = fake_upstream[0]
    with ThreadedServer(create_app(settings)) as server, ThreadPoolExecutor(2) as pool:
        before = fake.calls
        running = pool.submit(chat, server.url, "slow:1.5")
        while fake.calls == before:  # it holds the one slot
            time.sleep(0.01)
        waiting = pool.submit(chat, server.url, "hello")
        time.sleep(0.3)  # it is queued behind the slow one
        started = time.monotonic()
        refused = chat(server.url, "hello")
        assert time.monotonic() - started < 0.5  # not after queue_timeout
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert running.result().status_code == 200
        assert waiting.result().status_code == 200


def test_a_probe_that_never_gets_an_answer_lets_the_next_request_probe() -> None:
    """A half-open probe refused by admission or abandoned by its client proves nothing: the
    circuit must not wait forever for its verdict."""
    import asyncio

    from backends.base import Completion, Health, Route, UpstreamRequest
    from gateway.guard import Guarded

    class Hanging:
        name = "hanging"

        async def complete(self, request: UpstreamRequest) -> Completion:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def stream(self, request: UpstreamRequest) -> object:
            raise AssertionError("not used")

        async def health(self) -> Health:
            return Health(True)

        async def close(self) -> None:
            return None

    async def scenario() -> None:
        clock = Clock()
        circuit = Circuit(failures=1, cooldown=5, clock=clock)
        guarded = Guarded(Hanging(), 1, 0.01, circuit, max_queue=0)  # type: ignore[arg-type]
        request = UpstreamRequest(Route.CHAT, b"{}", {}, "m", "id", False)
        circuit.failed()
        clock.now += 5  # half-open
        probe = asyncio.ensure_future(guarded.complete(request))
        await asyncio.sleep(0)
        assert not circuit.allow()  # the probe is out
        probe.cancel()  # its client left
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert circuit.allow()  # another request may probe
        circuit.abandon()
        holder = asyncio.ensure_future(guarded.complete(request))  # takes the only slot
        await asyncio.sleep(0)
        circuit.abandon()
        with pytest.raises(Exception, match="concurrency limit"):
            await guarded.complete(request)  # admitted by the circuit, refused by the queue
        assert circuit.allow()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder

    asyncio.run(scenario())
