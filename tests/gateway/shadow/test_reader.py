"""Streamed shadow calls read in a child process: the same pairs as inline, cancels, a lost child.

The candidate is the fake upstream over real HTTP (the child builds its backends from their
settings, so an in-process backend cannot go there); real engines read through the child are
in tests/integration/test_shadow.py. Each pair read through the child is compared with the pair
the inline leg records for the same answer, field by field but for the timings.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from time import perf_counter
from typing import Any, cast

import openai
import orjson
import pytest

from backends import registry
from backends.arrivals import Arrivals
from backends.base import EventStream, Route, UpstreamRequest
from backends.piping import Deliver, pipe
from backends.transport.turns import OnePerTurn
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.shadow import reader
from gateway.shadow.leg import ShadowConfig, ShadowLeg
from gateway.shadow.pairing import PrimaryOutcome
from gateway.shadow.pairs import Leg, PairRecord
from gateway.shadow.reader import StreamReader
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]


class Pairs(list[PairRecord]):
    def record(self, pair: PairRecord) -> None:
        self.append(pair)


def request(cue: str, n: int = 0) -> UpstreamRequest:
    payload: dict[str, Any] = {
        "model": MODEL, "messages": [{"role": "user", "content": cue}], "stream": True,
    }  # fmt: skip
    return UpstreamRequest(Route.CHAT, orjson.dumps(payload), payload, MODEL, f"req-{n}", True)


def primary_outcome() -> PrimaryOutcome:
    event = {"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]}
    now = perf_counter()
    chunk = b"data: " + orjson.dumps(event) + b"\n\ndata: [DONE]\n\n"
    chunks = Arrivals()
    chunks.add(now, chunk)
    return PrimaryOutcome(200, now - 0.01, now, chunks=chunks)


async def shadowed(
    url: str, cues: list[str], reader: StreamReader | None, seconds: float = 5.0
) -> tuple[Pairs, Metrics]:
    """Shadows one streamed request per cue to the backend at `url`, to the end."""
    settings = VllmSettings(url=url, model=MODEL)
    candidate = registry.create("cand", settings)
    primary = registry.create("primary", settings)
    pairs, metrics = Pairs(), Metrics()
    config = ShadowConfig(1.0, 0.0, 8, 8, seconds, keep_text=True)
    leg = ShadowLeg(primary, candidate, config, pairs, metrics.shadow_for("m"), reader=reader)
    leg.route = "m"
    for n, cue in enumerate(cues):
        mirror = leg.mirror(request(cue, n))
        assert mirror is not None
        mirror.finish(primary_outcome())
    await leg.close(3 * seconds)
    await candidate.close()
    await primary.close()
    return pairs, metrics


def untimed(leg: Leg) -> Leg:
    return replace(leg, ttft_ms=None, e2e_ms=None)


def by_cue(pairs: Pairs) -> dict[str, PairRecord]:
    return {orjson.loads(pair.request or "")["messages"][0]["content"]: pair for pair in pairs}


def comparable(pair: PairRecord) -> PairRecord:
    """The pair but for what differs between any two runs: its id, time and the timings."""
    return replace(
        pair, pair_id="", created_at=0.0, primary=untimed(pair.primary),
        candidate=untimed(pair.candidate),
    )  # fmt: skip


def failed_total(metrics: Metrics) -> float:
    found = metrics.registry.get_sample_value("gateway_shadow_failed_total", {"route": "m"})
    return found or 0.0


CUES = ["hi", "long:5", "status:500", "status:400", "garbage", "malformed-sse", "reset-mid-stream"]


def test_the_child_records_the_pairs_the_inline_leg_records(fake_upstream: Fake) -> None:
    url = fake_upstream[1].url

    async def scenario() -> tuple[Pairs, Pairs, Metrics, Metrics, int | None]:
        inline, inline_metrics = await shadowed(url, CUES, None)
        reader = StreamReader({"cand": VllmSettings(url=url, model=MODEL)})
        await reader.start()
        child = reader.pid
        elsewhere, metrics = await shadowed(url, CUES, reader)
        await reader.close()
        return inline, elsewhere, inline_metrics, metrics, child

    inline, elsewhere, inline_metrics, metrics, child = asyncio.run(scenario())
    assert child is not None
    assert child != os.getpid()
    assert len(inline) == len(elsewhere) == len(CUES)
    ours, theirs = by_cue(inline), by_cue(elsewhere)
    for cue, pair in ours.items():
        assert comparable(theirs[cue]) == comparable(pair), cue
    statuses = sorted(pair.candidate.status for pair in elsewhere)
    assert statuses == [200, 200, 400, 502, 502, 502, 502]
    assert failed_total(metrics) == failed_total(inline_metrics) == 5
    long = theirs["long:5"].candidate  # five more chunks, 10 ms apart, after the first
    assert long.text == "hello from fake....."
    assert long.ttft_ms is not None
    assert long.e2e_ms is not None
    assert 0 < long.ttft_ms < long.e2e_ms
    assert long.e2e_ms >= 50


def test_the_child_gives_the_core_back_after_each_read_and_each_leg(
    fake_upstream: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's reads yield the core (to a relay waiting for it), once per read and once
    per leg built; the inline leg's never do, since the relay is its own process."""
    yields: list[float] = []
    monkeypatch.setattr(os, "sched_yield", lambda: yields.append(perf_counter()))
    settings = VllmSettings(url=fake_upstream[1].url, model=MODEL)

    async def scenario() -> tuple[int, int, int, int, str | None]:
        backend = registry.create("cand", settings)
        try:
            await reader.read_events(backend, request("long:5"))
            inline = len(yields)
            chunks, _, _ = await reader.read_events(backend, request("long:5"), yielding=True)
            per_read = len(yields) - inline
            before = len(yields)
            leg, _, _ = await reader.read_leg(backend, request("hi"), OnePerTurn())
        finally:
            await backend.close()
        return inline, per_read, len(list(chunks)), len(yields) - before, leg.text

    inline, per_read, reads, for_leg, text = asyncio.run(scenario())
    assert inline == 0
    assert reads >= 2  # six events 10 ms apart: more than one read
    assert per_read == reads
    assert text == "hello from fake"
    assert for_leg >= 2  # its reads, then the leg


class Hogged:
    """A real stream whose reader's loop is held up once the answer's last piece was read, before
    the reading task can resume: what other streams' work does to it at an engine's step."""

    def __init__(self, events: EventStream, seconds: float) -> None:
        self._events, self._seconds = events, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._events, name)

    async def pipe(self, deliver: Deliver) -> bool:
        def hog_after_the_end(piece: bytes) -> bool:
            kept = deliver(piece)
            if b"[DONE]" in piece:  # the loop busy elsewhere before the reading task resumes
                time.sleep(self._seconds)
            return kept

        return await pipe(self._events, hog_after_the_end)


def test_a_leg_ends_when_its_last_piece_came_not_when_its_task_resumed(
    fake_upstream: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = VllmSettings(url=fake_upstream[1].url, model=MODEL)

    async def scenario() -> tuple[Leg, float]:
        backend = registry.create("cand", settings)
        real = backend.stream

        async def hogged(upstream: UpstreamRequest) -> EventStream:
            return cast(EventStream, Hogged(await real(upstream), 0.3))

        monkeypatch.setattr(backend, "stream", hogged)
        try:
            began = perf_counter()
            leg, _, _ = await reader.read_leg(backend, request("long:5"), OnePerTurn())
            return leg, perf_counter() - began
        finally:
            await backend.close()

    leg, took = asyncio.run(scenario())
    assert took >= 0.3  # the hog did hold the reading task up
    assert leg.text == "hello from fake....."
    assert leg.e2e_ms is not None
    assert 50 <= leg.e2e_ms < 250  # six events 10 ms apart; not the hog's 300 ms


def test_the_child_times_a_call_from_when_it_started_it(fake_upstream: Fake) -> None:
    """Not from when the worker asked: a call waiting in the pipe, or for the child's turn on
    the core, is the gateway's delay, and the primary's leg is timed from its own call too."""
    settings = {"cand": VllmSettings(url=fake_upstream[1].url, model=MODEL)}

    async def scenario() -> Leg:
        child = StreamReader(settings)
        await child.start()
        try:
            asked_long_ago = perf_counter() - 10.0
            leg, _, _ = await child.read("cand", request("long:5"), asked_long_ago)
        finally:
            await child.close()
        return leg

    leg = asyncio.run(scenario())
    assert leg.text == "hello from fake....."
    assert leg.ttft_ms is not None
    assert leg.e2e_ms is not None
    assert 0 < leg.ttft_ms < leg.e2e_ms
    assert 50 <= leg.e2e_ms < 5000  # six events 10 ms apart, not the 10 s since it was asked


def test_a_call_cancelled_by_the_shadow_timeout_is_cut_in_the_child(fake_upstream: Fake) -> None:
    app, server = fake_upstream

    async def scenario() -> tuple[Pairs, int]:
        reader = StreamReader({"cand": VllmSettings(url=server.url, model=MODEL)})
        await reader.start()
        pairs, _ = await shadowed(server.url, ["long:300"], reader, seconds=0.5)
        await reader.close()
        return pairs, app.cancelled

    cancelled_before = app.cancelled
    (pair,), cancelled = asyncio.run(scenario())
    assert pair.candidate.status == 504
    assert pair.candidate.error == "shadow timeout"
    assert cancelled == cancelled_before + 1  # the upstream saw the stream cut, not finished


def test_a_lost_child_fails_its_calls_and_the_next_call_starts_another(
    fake_upstream: Fake,
) -> None:
    url = fake_upstream[1].url

    async def scenario() -> tuple[Pairs, Pairs, int, int | None, int | None]:
        reader = StreamReader({"cand": VllmSettings(url=url, model=MODEL)})
        await reader.start()
        first = reader.pid
        assert first is not None

        async def kill_soon() -> None:
            await asyncio.sleep(0.3)  # the call under way, its stream running
            os.kill(first, signal.SIGKILL)

        killer = asyncio.create_task(kill_soon())
        lost, _ = await shadowed(url, ["long:200"], reader)
        await killer
        after, _ = await shadowed(url, ["hi"], reader)
        second = reader.pid
        await reader.close()
        return lost, after, reader.starts, first, second

    (lost,), (after,), starts, first, second = asyncio.run(scenario())
    assert lost.candidate.status == 503
    assert lost.candidate.error == "the shadow reader process ended"
    assert after.candidate.status == 200
    assert after.candidate.text == "hello from fake"
    assert starts == 2
    assert second != first


def test_closing_lets_the_calls_under_way_finish_and_the_child_leave(fake_upstream: Fake) -> None:
    url = fake_upstream[1].url

    async def scenario() -> tuple[Pairs, int | None]:
        reader = StreamReader({"cand": VllmSettings(url=url, model=MODEL)})
        await reader.start()
        child = reader.pid
        pairs, _ = await shadowed(url, ["long:30"], reader)
        await reader.close()
        return pairs, child

    (pair,), child = asyncio.run(scenario())
    assert pair.candidate.status == 200
    assert child is not None
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(child, os.WNOHANG)


def test_a_child_that_cannot_start_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("sys.executable", "/bin/false")

    async def scenario() -> str:
        reader = StreamReader({})
        try:
            await reader.start()
        except Exception as exc:
            return str(exc)
        return "started"

    message = asyncio.run(scenario())
    assert message.startswith("the shadow reader process did not start")
    assert message in caplog.messages  # logged with its reason, for a gateway that stops on it


def test_the_gateway_reads_its_shadow_streams_in_a_child_it_stops(
    fake_upstream: Fake, tmp_path: Path
) -> None:
    upstream = VllmSettings(url=fake_upstream[1].url, model=MODEL)
    settings = Settings(
        backends={"main": upstream, "cand": upstream}, primary="main", models=["m"],
        shadow="cand", shadow_rate=1.0, noise_rate=0.0, shadow_reader="process",
        records_url=f"sqlite:///{tmp_path / 'pairs.db'}", records_text="full",
    )  # fmt: skip
    app = create_app(settings)
    with ThreadedServer(app) as server:
        reader = app.runtime().reader
        assert reader is not None
        child = reader.pid
        assert child is not None
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        chunks = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "long:3"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hello from fake..."
    (pair,) = stored_pairs(tmp_path / "pairs.db")  # written before the gateway stopped
    assert pair.candidate.text == "hello from fake..."
    assert pair.candidate.ttft_ms is not None
    with pytest.raises(ChildProcessError):  # the child left with the gateway, and was reaped
        os.waitpid(child, os.WNOHANG)
