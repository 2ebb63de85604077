"""Overload, circuit breaking, fallback and retries: the gateway's answers when engines fail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
import uvloop

from backends import vllm
from backends.base import Completion, EventStream, Health, Route, UpstreamRequest
from backends.errors import BackendProtocolError, Overloaded
from backends.piping import pipe
from backends.sampling import OPENAI_DEFAULTS, Sampling, resolve
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.proxy.guard import Circuit, Guarded
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
    assert circuit.probe_failed()
    assert circuit.state == "open"


def test_a_failed_probe_is_overruled_by_requests_answered_since_the_previous_one() -> None:
    circuit = Circuit(failures=5, cooldown=1, clock=Clock())
    circuit.succeeded()  # a request answered
    assert not circuit.probe_failed()
    assert circuit.state == "closed"
    assert circuit.probe_failed()  # nothing answered since that probe
    assert circuit.state == "open"
    other = Circuit(failures=5, cooldown=1, clock=Clock())
    other.succeeded()
    other.probe_passed()  # the evidence belongs to the probe round it came in
    assert other.probe_failed()
    assert other.state == "open"


def test_a_backend_too_busy_for_its_probe_keeps_serving_until_its_answers_stop(
    fake_upstream: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    """Every probe times out (the engine answers /health after 30 s, the probe waits 1.1 s)
    while requests are answered: the circuit stays closed. Once no request is answered between
    two probes, the next failed probe opens it."""
    fake, upstream = fake_upstream
    settings = Settings(
        backends={"main": VllmSettings(url=upstream.url, model=MODEL, connect_timeout=0.1)},
        primary="main", probe_interval=0.2, records_url="sqlite:///:memory:",
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server, caplog.at_level(logging.INFO):
        fake.health_delay = 30.0  # the fake is the session's: reset below
        try:
            answered_then_refused(server.url, caplog)
        finally:
            fake.health_delay = 0.0


def answered_then_refused(url: str, caplog: pytest.LogCaptureFixture) -> None:
    statuses, until = [], time.monotonic() + 4.0  # three probe rounds fail, or more
    while time.monotonic() < until:
        statuses.append(chat(url, "hello").status_code)
        time.sleep(0.05)
    assert set(statuses) == {200}
    kept = "backend main failed its readiness probe while answering requests"
    assert caplog.text.count(kept) >= 2
    deadline = time.monotonic() + 15
    while "backend main failed its readiness probe: circuit open" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.1)
    refused = chat(url, "hello")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "circuit_open"


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

    class Hanging:
        name = "hanging"

        async def complete(self, request: UpstreamRequest) -> Completion:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def stream(self, request: UpstreamRequest) -> object:
            raise AssertionError("not used")

        def sampling(self, request: UpstreamRequest) -> Sampling:

            return resolve(request.payload, {}, OPENAI_DEFAULTS)

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


# --- Admission, unit by unit: FIFO hand-off, and no slot leaked whatever the waiters do ---


class Gated:
    """A backend whose calls each wait for their own gate, recording the order they enter."""

    name = "gated"

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, request_id: str) -> asyncio.Event:
        return self.gates.setdefault(request_id, asyncio.Event())

    async def complete(self, request: UpstreamRequest) -> Completion:
        self.entered.append(request.request_id)
        await self.gate(request.request_id).wait()
        return Completion(b"{}")

    async def stream(self, request: UpstreamRequest) -> EventStream:
        raise AssertionError("not used")

    def sampling(self, request: UpstreamRequest) -> Sampling:

        return resolve(request.payload, {}, OPENAI_DEFAULTS)

    async def health(self) -> Health:
        return Health(True)

    async def close(self) -> None:
        return None


def gated(capacity: int, *, queue_timeout: float = 10.0, max_queue: int = 100) -> Guarded:
    circuit = Circuit(failures=1000, cooldown=1)
    return Guarded(Gated(), capacity, queue_timeout, circuit, max_queue=max_queue)


def call(guarded: Guarded, request_id: str) -> asyncio.Future[Completion]:
    request = UpstreamRequest(Route.CHAT, b"{}", {}, "m", request_id, False)
    return asyncio.ensure_future(guarded.complete(request))


def backend_of(guarded: Guarded) -> Gated:
    assert isinstance(guarded.inner, Gated)
    return guarded.inner


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def assert_idle(guarded: Guarded) -> None:
    assert guarded.busy == 0
    assert not guarded._waiters
    assert guarded._waiting == 0


def test_freed_slots_go_to_waiters_in_arrival_order() -> None:
    async def scenario() -> None:
        guarded = gated(1)
        backend = backend_of(guarded)
        calls = [call(guarded, "holder")]
        await settle()
        for name in ("first", "second", "third"):
            calls.append(call(guarded, name))
            await settle()  # each one queued before the next arrives
        backend.gate("holder").set()
        calls.append(call(guarded, "late"))  # arrives as the slot frees: behind the line
        for name in ("first", "second", "third", "late"):
            await settle()
            assert backend.entered[-1] == name
            assert guarded.busy == 1
            backend.gate(name).set()
        await asyncio.gather(*calls)
        assert backend.entered == ["holder", "first", "second", "third", "late"]
        assert_idle(guarded)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line_without_its_slot() -> None:
    async def scenario() -> None:
        guarded = gated(1)
        backend = backend_of(guarded)
        holder, leaver = call(guarded, "holder"), call(guarded, "leaver")
        await settle()
        stayer = call(guarded, "stayer")
        await settle()
        leaver.cancel()
        await settle()
        assert len(guarded._waiters) == 1  # the cancelled one is gone at once
        backend.gate("holder").set()
        await settle()
        assert backend.entered == ["holder", "stayer"]  # the slot skipped the cancelled one
        backend.gate("stayer").set()
        await asyncio.gather(holder, stayer)
        with pytest.raises(asyncio.CancelledError):
            await leaver
        assert_idle(guarded)

    asyncio.run(scenario())


@pytest.mark.parametrize("behind", [False, True], ids=["alone", "with-one-behind"])
def test_a_waiter_cancelled_just_after_a_slot_was_handed_to_it_passes_it_on(
    behind: bool,
) -> None:
    """The race: the slot is handed over (the waiter's future is done) and the waiter's task
    is cancelled before it wakes. The slot must go on to the next waiter, or be freed."""

    async def scenario() -> None:
        guarded = gated(1)
        backend = backend_of(guarded)
        await guarded._admit()  # this test holds the one slot itself, to free it at will
        waiter = call(guarded, "waiter")
        await settle()
        later = call(guarded, "later") if behind else None
        await settle()
        guarded._release()  # hands the slot to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await settle()
        if later is not None:
            assert backend.entered == ["later"]
            assert guarded.busy == 1
            backend.gate("later").set()
            await later
        assert backend.entered == (["later"] if behind else [])
        assert_idle(guarded)

    asyncio.run(scenario())


def test_a_slot_handed_over_as_the_queue_timeout_fires_is_not_leaked() -> None:
    async def scenario() -> None:
        guarded = gated(1, queue_timeout=0)  # the timeout fires on the loop's next round
        await guarded._admit()
        waiter = call(guarded, "waiter")
        await asyncio.sleep(0)  # the waiter queues; its timeout is now due
        guarded._release()  # the slot is handed over just as the timeout fires
        with contextlib.suppress(Overloaded):
            await waiter
        assert_idle(guarded)

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_after_any_mix_of_completions_timeouts_and_cancels_no_slot_is_busy(
    seed: int, loop: str
) -> None:
    chooser = random.Random(seed)

    async def scenario() -> None:
        guarded = gated(3, queue_timeout=0.02, max_queue=5)
        backend = backend_of(guarded)
        calls: list[asyncio.Future[Completion]] = []
        for index in range(60):
            calls.append(call(guarded, str(index)))
            await asyncio.sleep(chooser.choice([0, 0, 0.001, 0.005]))
            action = chooser.random()
            pending = [future for future in calls if not future.done()]
            if action < 0.4 and backend.entered:  # an engine answers one in flight
                backend.gate(chooser.choice(backend.entered)).set()
            elif action < 0.6 and pending:  # a client leaves, waiting or in flight
                chooser.choice(pending).cancel()
        for index in range(len(calls)):  # the waiters still in line included
            backend.gate(str(index)).set()
        async with asyncio.timeout(5):
            results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [result for result in results if isinstance(result, Overloaded)]
        assert refused  # the mix did overload the guard
        assert all(
            isinstance(result, (Completion, Overloaded, asyncio.CancelledError))
            for result in results
        )
        assert_idle(guarded)
        backend.gate("after").set()
        after = call(guarded, "after")
        await asyncio.sleep(0)
        assert backend.entered[-1] == "after"  # admitted at once
        await after

    if loop == "uvloop":
        uvloop.run(scenario())
    else:
        asyncio.run(scenario())


# --- A stream holds its slot until it ends, piped or pulled, whatever ends it ---


def vllm_guarded(url: str, failures: int = 1000) -> Guarded:
    backend = vllm.create("main", VllmSettings(url=url, model=MODEL, read_timeout=5.0))
    return Guarded(backend, 1, 0.1, Circuit(failures=failures, cooldown=60), max_queue=0)


def streamed(cue: str) -> UpstreamRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": cue}], "stream": True}
    return UpstreamRequest(Route.CHAT, orjson.dumps(body), body, MODEL, "id", True)


async def read_all(events: EventStream) -> bool:
    async for _ in events:
        pass
    return True


def test_a_piped_stream_holds_its_slot_until_its_end(fake_upstream: Fake) -> None:
    async def scenario() -> None:
        guarded = vllm_guarded(fake_upstream[1].url)
        events = await guarded.stream(streamed("long:3"))
        got: list[bytes] = []

        def deliver(chunk: bytes) -> bool:
            got.append(chunk)
            assert guarded.busy == 1  # held while its events pass
            return True

        assert await pipe(events, deliver)
        assert guarded.busy == 0
        assert guarded.circuit.state == "closed"
        assert got[-1].endswith(b"data: [DONE]\n\n")
        assert b"".join(got).count(b"data: {") == 6  # three words, three dots
        await events.aclose()
        await guarded.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("piped", [True, False], ids=["piped", "pulled"])
def test_a_stream_cut_mid_way_counts_against_the_engine(fake_upstream: Fake, piped: bool) -> None:
    async def scenario() -> None:
        guarded = vllm_guarded(fake_upstream[1].url, failures=1)
        events = await guarded.stream(streamed("reset-mid-stream"))
        with pytest.raises(BackendProtocolError):
            await (pipe(events, lambda chunk: True) if piped else read_all(events))
        assert guarded.busy == 0
        assert guarded.circuit.state == "open"
        await events.aclose()
        await guarded.close()

    asyncio.run(scenario())


def test_a_stream_closed_unread_frees_its_slot_and_stops_the_engine(fake_upstream: Fake) -> None:
    async def scenario() -> None:
        fake = fake_upstream[0]
        cancelled = fake.cancelled
        guarded = vllm_guarded(fake_upstream[1].url)
        events = await guarded.stream(streamed("long:500"))
        await events.aclose()  # the client left before its first event was relayed
        assert guarded.busy == 0
        assert guarded.circuit.state == "closed"  # no verdict on the engine
        for _ in range(100):
            if fake.cancelled > cancelled:
                break
            await asyncio.sleep(0.02)
        assert fake.cancelled == cancelled + 1
        await guarded.close()

    asyncio.run(scenario())
