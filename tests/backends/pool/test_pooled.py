"""backends.pool.pooled: a pool over real HTTP servers on port 0; fakes only for what no engine
does on demand (refuse, hang up before an answer, never answer)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest

from backends import registry
from backends.base import Route, UpstreamRequest
from backends.errors import BackendProtocolError, GatewayError
from backends.piping import pipe
from backends.pool.pooled import PooledBackend
from backends.pool.stats import LocalStats
from backends.vllm import VllmSettings
from tests.engines.vllm_engine import free_port
from tests.support.fake_upstream import DroppingUpstream, FakeUpstream, MuteUpstream
from tests.support.servers import ThreadedServer


@pytest.fixture(scope="module")
def fakes() -> Iterator[list[tuple[FakeUpstream, ThreadedServer]]]:
    apps = [FakeUpstream(), FakeUpstream()]
    servers = [ThreadedServer(app).start() for app in apps]
    yield list(zip(apps, servers, strict=True))
    for server in servers:
        server.stop()


def ask(text: str = "hi", stream: bool = False, **fields: Any) -> UpstreamRequest:
    payload = {"model": "m", "messages": [{"role": "user", "content": text}], **fields}
    if stream:
        payload["stream"] = True
    return UpstreamRequest(Route.CHAT, orjson.dumps(payload), payload, "m", "r1", stream)


def pooled(urls: list[str], stats: LocalStats, **fields: Any) -> PooledBackend:
    settings = VllmSettings(urls=urls, connect_timeout=0.5, read_timeout=2.0, **fields)
    backend = registry.create("vllm", settings, stats)
    assert isinstance(backend, PooledBackend)
    return backend


def run(urls: list[str], scenario: Callable[[PooledBackend, LocalStats], Awaitable[None]],
        **fields: Any) -> LocalStats:  # fmt: skip
    stats = LocalStats()

    async def main() -> None:
        backend = pooled(urls, stats, **fields)
        try:
            await scenario(backend, stats)
        finally:
            await backend.close()

    asyncio.run(main())
    return stats


def name(url: str) -> str:
    return url.removeprefix("http://")


def test_requests_spread_over_the_endpoints_and_name_the_one_that_answered(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    urls = [server.url for _, server in fakes]
    before = [app.calls for app, _ in fakes]
    answered: list[str | None] = []

    async def scenario(backend: PooledBackend, _: LocalStats) -> None:
        answers = await asyncio.gather(*(backend.complete(ask()) for _ in range(40)))
        answered.extend(answer.endpoint for answer in answers)

    stats = run(urls, scenario)
    calls = [app.calls - was for (app, _), was in zip(fakes, before, strict=True)]
    assert sum(calls) == 40
    assert min(calls) >= 10, calls
    assert set(answered) == set(map(name, urls))
    assert [stats.endpoints[name(u)].answered.value for u in urls] == calls


def test_a_refused_endpoint_is_retried_elsewhere_and_ejected(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    live = fakes[0][1].url

    async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
        for _ in range(30):
            assert (await backend.complete(ask())).endpoint == name(live)
        refused = stats.endpoints[name(closed)]
        assert refused.failed.value == 3  # then ejected: no more tries there
        assert (refused.ejections.value, refused.out.value) == (1, 1)
        assert stats.retried.value == 3

    run([closed, live], scenario, eject_cooldown=60.0)


def test_a_connection_dropped_before_any_answer_is_sent_again_elsewhere(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    live = fakes[1][1].url
    with DroppingUpstream() as dropping:

        async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
            answers = [await backend.complete(ask()) for _ in range(10)]
            assert {answer.endpoint for answer in answers} == {name(live)}
            assert dropping.posts >= 1
            assert stats.retried.value == dropping.posts

        run([dropping.url, live], scenario)


def test_an_endpoint_that_accepts_no_connection_is_retried_elsewhere(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    live = fakes[0][1].url
    # A full accept queue: Linux drops the next SYN, so a connect there hangs until its timeout.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        hung = f"http://127.0.0.1:{listener.getsockname()[1]}"

        async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
            answers = await asyncio.gather(*(backend.complete(ask()) for _ in range(8)))
            assert {answer.endpoint for answer in answers} == {name(live)}
            tried = stats.endpoints[name(hung)].failed.value
            assert tried >= 1  # p2c drew it at least once among 8 concurrent calls
            assert stats.retried.value == tried

        run([hung, live], scenario, eject_cooldown=60.0)


def test_a_stream_names_its_endpoint_and_a_failure_in_it_counts_there(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    url = fakes[0][1].url
    other = fakes[1][1].url

    async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
        backend.balancer.members[1].ready = False  # all to the first
        events = await backend.stream(ask(stream=True))
        chunks = [chunk async for chunk in events]
        await events.aclose()
        assert events.endpoint == name(url)
        assert chunks[-1].endswith(b"[DONE]\n\n")
        broken = await backend.stream(ask("reset-mid-stream", stream=True))
        with pytest.raises(BackendProtocolError) as failure:
            async for _ in broken:
                pass
        await broken.aclose()
        assert failure.value.endpoint == name(url)
        counted = stats.endpoints[name(url)]
        assert (counted.answered.value, counted.failed.value, counted.in_flight.value) == (1, 1, 0)
        assert backend.balancer.members[0].active == 0

    run([url, other], scenario)


def test_a_piped_stream_hands_events_on_from_the_socket_and_settles_its_endpoint(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    """Piped, a pool's stream hands each read on from the connection's read callback, where no
    task runs (pulled, every event would wake the reader's task), and gives its endpoint the
    same verdicts as when pulled."""
    url = fakes[0][1].url

    async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
        backend.balancer.members[1].ready = False  # all to the first
        handed: list[tuple[bytes, asyncio.Task[Any] | None]] = []

        def deliver(events: bytes) -> bool:
            handed.append((events, asyncio.current_task()))
            return True

        events = await backend.stream(ask("long:20", stream=True))  # 20 events 10 ms apart
        assert await pipe(events, deliver)
        await events.aclose()
        assert b"".join(chunk for chunk, _ in handed).endswith(b"[DONE]\n\n")
        # What came with the answer's head is handed on at once, in this task; the rest not.
        assert sum(task is None for _, task in handed) >= 20, handed
        broken = await backend.stream(ask("reset-mid-stream", stream=True))
        with pytest.raises(BackendProtocolError) as failure:
            await pipe(broken, deliver)
        await broken.aclose()
        assert failure.value.endpoint == name(url)
        counted = stats.endpoints[name(url)]
        assert (counted.answered.value, counted.failed.value, counted.in_flight.value) == (1, 1, 0)
        assert backend.balancer.members[0].active == 0

    run([url, fakes[1][1].url], scenario)


def test_a_client_leaving_a_stream_frees_the_endpoint_without_a_verdict(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
        events = await backend.stream(ask("long:100", stream=True))
        async for _ in events:
            break
        await events.aclose()
        assert sum(e.active for e in backend.balancer.members) == 0
        counted = stats.endpoints[str(events.endpoint)]
        assert (counted.answered.value, counted.failed.value) == (0, 0)

    run([server.url for _, server in fakes], scenario)


def test_a_hanging_endpoint_fails_its_probe_and_leaves_the_rotation(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    live = fakes[0][1].url
    with MuteUpstream() as silent:

        async def scenario(backend: PooledBackend, stats: LocalStats) -> None:
            health = await backend.health()
            assert health.ready
            assert health.served_model == "fake-model"
            assert health.detail.startswith("1 of 2 endpoints ready")
            assert name(silent.url) in health.detail
            assert stats.endpoints[name(silent.url)].out.value == 1
            held = silent.connections
            answers = [await backend.complete(ask()) for _ in range(10)]
            assert {answer.endpoint for answer in answers} == {name(live)}
            assert silent.connections == held  # no request went there

        run([silent.url, live], scenario)


def test_with_no_endpoint_ready_the_pool_says_so() -> None:
    closed = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]

    async def scenario(backend: PooledBackend, _: LocalStats) -> None:
        health = await backend.health()
        assert not health.ready
        assert health.detail.startswith("0 of 2 endpoints ready")
        with pytest.raises(GatewayError) as failure:
            await backend.complete(ask())
        assert failure.value.status_code == 503

    run(closed, scenario, retries=1)


def test_dns_discovery_makes_an_endpoint_of_each_address(
    fakes: list[tuple[FakeUpstream, ThreadedServer]],
) -> None:
    port = fakes[0][1].url.rpartition(":")[2]
    stats = LocalStats()

    async def main() -> None:
        settings = VllmSettings(url=f"http://localhost:{port}", discovery="dns",
                                connect_timeout=0.5, resolve_interval=0.2)  # fmt: skip
        backend = registry.create("vllm", settings, stats)
        assert isinstance(backend, PooledBackend)
        try:
            health = await backend.health()
            names = {e.name for e in backend.balancer.members}
            assert f"127.0.0.1:{port}" in names
            assert health.ready
            answer = await backend.complete(ask())
            assert answer.endpoint == f"127.0.0.1:{port}"
        finally:
            await backend.close()

    asyncio.run(main())
