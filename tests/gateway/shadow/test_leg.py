"""The shadow leg's bounds, failures and sampling, against in-process backends with set delays.

The isolation of the client from the candidate is proven on real engines
(tests/integration/test_shadow.py); here the leg itself is driven directly, so a burst, a
timeout or a draw sequence is exact.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable, Iterable
from time import perf_counter
from typing import Any

import orjson
import pytest

from backends.base import Backend, Completion, EventStream, Health, Route, UpstreamRequest
from backends.errors import BackendUnavailable, GatewayError
from backends.openai_shapes import Events
from backends.sampling import OPENAI_DEFAULTS, Sampling, resolve
from gateway.metrics import Metrics
from gateway.shadow.leg import Mirror, ShadowConfig, ShadowLeg
from gateway.shadow.pairing import PrimaryOutcome
from gateway.shadow.pairs import PairRecord


def answer(text: str) -> bytes:
    return orjson.dumps({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    })  # fmt: skip


class FakeBackend:
    """A `Backend` in this process: answers `body` after `delay` seconds, or raises `error`;
    notes how many calls ran at once."""

    def __init__(
        self,
        name: str,
        text: str = "ok",
        delay: float = 0.0,
        error: GatewayError | None = None,
        body: bytes | None = None,
    ) -> None:
        self.name = name
        self.delay = delay
        self.error = error
        self.body = answer(text) if body is None else body
        self.calls = 0
        self.running = 0
        self.most_running = 0

    async def complete(self, request: UpstreamRequest) -> Completion:
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return Completion(self.body)
        finally:
            self.running -= 1

    async def stream(self, request: UpstreamRequest) -> EventStream:
        completion = await self.complete(request)
        text = orjson.loads(completion.body)["choices"][0]["message"]["content"]
        return Events(self._events(text), None)

    async def _events(self, text: str) -> AsyncGenerator[bytes, None]:
        chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def sampling(self, request: UpstreamRequest) -> Sampling:

        return resolve(request.payload, {}, OPENAI_DEFAULTS)

    async def health(self) -> Health:
        return Health(True, served_model="fake")

    async def close(self) -> None:
        return None


class Pairs(list[PairRecord]):
    """The sink: keeps every pair."""

    def record(self, pair: PairRecord) -> None:
        self.append(pair)


def build(
    candidate: Backend,
    *,
    rate: float = 1.0,
    max_in_flight: int = 4,
    queue: int = 4,
    timeout: float = 2.0,
    draw: Callable[[], float] = lambda: 0.0,
    noise_rate: float = 0.0,
) -> tuple[ShadowLeg, Pairs, Metrics]:
    config = ShadowConfig(rate, noise_rate, max_in_flight, queue, timeout, keep_text=True)
    pairs, metrics = Pairs(), Metrics()
    counts = metrics.shadow_for("m")
    leg = ShadowLeg(FakeBackend("primary"), candidate, config, pairs, counts, draw)
    leg.route = "m"
    return leg, pairs, metrics


def request(n: int = 0) -> UpstreamRequest:
    payload: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": f"{n}"}]}
    return UpstreamRequest(Route.CHAT, orjson.dumps(payload), payload, "m", f"req-{n}", False)


def finish(mirror: Mirror | None, text: str = "ok") -> None:
    """The proxy's hand-over: the primary answered `text`."""
    if mirror is not None:
        now = perf_counter()
        mirror.finish(PrimaryOutcome(200, now - 0.01, now, body=answer(text)))


def count(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(
        f"gateway_shadow_{name}_total", {"route": "m", **labels}
    )
    return found or 0.0


def one_pair(candidate: FakeBackend, primary_text: str = "ok", **config: Any) -> Any:
    """Shadows one request to the end: the pair, the metrics and the seconds it took."""

    async def scenario() -> tuple[PairRecord, Metrics, float]:
        leg, pairs, metrics = build(candidate, **config)
        started = perf_counter()
        finish(leg.mirror(request()), primary_text)
        await leg.close(10.0)
        (pair,) = pairs
        return pair, metrics, perf_counter() - started

    return asyncio.run(scenario())


def test_a_burst_past_in_flight_and_queue_is_dropped_and_counted() -> None:
    candidate = FakeBackend("cand", delay=0.2)

    async def scenario() -> tuple[list[Mirror | None], ShadowLeg, Pairs, Metrics]:
        leg, pairs, metrics = build(candidate, max_in_flight=2, queue=3)
        # No await in between, as when many requests arrive in one event-loop turn.
        mirrors = [leg.mirror(request(n)) for n in range(10)]
        for mirror in mirrors:
            finish(mirror)
        await leg.close(10.0)
        return mirrors, leg, pairs, metrics

    mirrors, leg, pairs, metrics = asyncio.run(scenario())
    assert [mirror is not None for mirror in mirrors] == [True] * 5 + [False] * 5
    assert count(metrics, "sampled") == 10
    assert count(metrics, "dropped", reason="queue_full") == 5
    assert (len(pairs), candidate.calls, candidate.most_running) == (5, 5, 2)
    assert leg.admitted == 0  # every place is given back


def test_places_are_given_back_when_the_calls_end() -> None:
    async def scenario() -> list[bool]:
        leg, _, _ = build(FakeBackend("cand", delay=0.05), max_in_flight=1, queue=0)
        first = leg.mirror(request(0))
        refused = leg.mirror(request(1))  # the one place is taken
        await asyncio.sleep(0.2)  # the call is done; the primary has not answered yet
        later = leg.mirror(request(2))
        finish(first)
        finish(later)
        await leg.close(10.0)
        return [first is not None, refused is not None, later is not None]

    assert asyncio.run(scenario()) == [True, False, True]


@pytest.mark.parametrize(
    "candidate",
    [
        FakeBackend("cand", error=BackendUnavailable("engine down")),
        FakeBackend("cand", body=b"<html>502 Bad Gateway</html>"),
    ],
    ids=["error", "garbage"],
)
def test_a_failed_candidate_is_counted_failed_never_as_a_disagreement(
    candidate: FakeBackend,
) -> None:
    pair, metrics, _ = one_pair(candidate)
    assert pair.candidate.status in {502, 503}
    assert pair.candidate.error is not None
    assert count(metrics, "failed") == 1
    assert count(metrics, "completed") == 1
    assert count(metrics, "agreement", result="disagree") == 0
    assert count(metrics, "agreement", result="agree") == 0


@pytest.mark.parametrize(("primary", "result"), [("ok", "agree"), ("other", "disagree")])
def test_agreement_counts_pairs_whose_legs_both_answered(primary: str, result: str) -> None:
    _, metrics, _ = one_pair(FakeBackend("cand", text="ok"), primary_text=primary)
    assert count(metrics, "agreement", result=result) == 1
    assert count(metrics, "failed") == 0


def test_the_shadow_timeout_ends_a_slow_candidate() -> None:
    candidate = FakeBackend("cand", delay=30.0)
    pair, metrics, seconds = one_pair(candidate, timeout=0.2)
    assert (pair.candidate.status, pair.candidate.error) == (504, "shadow timeout")
    assert pair.candidate.e2e_ms is not None
    assert 200 <= pair.candidate.e2e_ms < 1000
    assert seconds < 1.0
    assert count(metrics, "failed") == 1
    assert pair.primary.status == 200


def test_a_primary_that_never_finishes_is_given_up_after_four_shadow_timeouts() -> None:
    async def scenario() -> tuple[float, Pairs, Metrics, Mirror | None, bool]:
        leg, pairs, metrics = build(FakeBackend("cand"), timeout=0.05)
        started = perf_counter()
        never = leg.mirror(request())  # the proxy never hands this outcome over
        late = leg.mirror(request(1))
        await asyncio.sleep(0.12)  # after its call ended, in time
        finish(late)
        await asyncio.wait(set(leg._tasks), timeout=1.0)
        seconds = perf_counter() - started
        await asyncio.sleep(0.06)  # one more sweep: nothing left to watch, so no timer
        return seconds, pairs, metrics, never, leg._sweeper is None

    seconds, pairs, metrics, never, unarmed = asyncio.run(scenario())
    assert 0.2 <= seconds < 0.5
    assert never is not None
    assert never.outcome.cancelled()
    assert count(metrics, "dropped", reason="primary_unfinished") == 1
    assert [pair.primary.status for pair in pairs] == [200]
    assert unarmed


def test_the_timeout_ends_both_calls_of_a_noise_sample_and_counts_both_failed() -> None:
    async def scenario() -> tuple[Pairs, Metrics]:
        leg, pairs, metrics = build(FakeBackend("cand", delay=30.0), timeout=0.2, noise_rate=1.0)
        finish(leg.mirror(request()))
        await leg.close(5.0)
        return pairs, metrics

    pairs, metrics = asyncio.run(scenario())
    assert [(p.kind, p.candidate.status, p.candidate.error) for p in pairs] == [
        ("shadow", 504, "shadow timeout"),
        ("noise", 504, "shadow timeout"),
    ]
    assert count(metrics, "failed") == 2


def test_shutdown_cancels_calls_under_way_without_recording_a_timeout() -> None:
    async def scenario() -> tuple[Pairs, Metrics, ShadowLeg]:
        leg, pairs, metrics = build(FakeBackend("cand", delay=30.0), timeout=10.0)
        finish(leg.mirror(request()))
        await asyncio.sleep(0.05)
        await leg.close(0.1)
        await asyncio.sleep(0)  # the cancelled task ends
        return pairs, metrics, leg

    pairs, metrics, leg = asyncio.run(scenario())
    assert pairs == []
    assert count(metrics, "dropped", reason="shutdown") == 1
    assert count(metrics, "dropped", reason="primary_unfinished") == 0  # counted once
    assert count(metrics, "failed") == 0
    assert leg._sweeper is None


def cycle(draws: Iterable[float]) -> Callable[[], float]:
    values = itertools.cycle(draws)
    return lambda: next(values)


@pytest.mark.parametrize("rate", [0.3, 0.75])
def test_a_fractional_rate_samples_the_draws_below_it(rate: float) -> None:
    draws = [i / 20 for i in range(20)]  # 0.0, 0.05, ..., 0.95: one draw per request

    async def scenario() -> tuple[list[bool], Metrics, Pairs]:
        leg, pairs, metrics = build(
            FakeBackend("cand"), rate=rate, max_in_flight=8, queue=100, draw=cycle(draws)
        )
        mirrors = [leg.mirror(request(n)) for n in range(40)]
        for mirror in mirrors:
            finish(mirror)
        await leg.close(10.0)
        return [mirror is not None for mirror in mirrors], metrics, pairs

    sampled, metrics, pairs = asyncio.run(scenario())
    expected = [draw < rate for draw in draws] * 2
    assert sampled == expected
    assert count(metrics, "sampled") == len(pairs) == sum(expected) == round(40 * rate)
