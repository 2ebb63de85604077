"""The hot path against a fake upstream: only what a real engine cannot show on demand
(hangs, garbage, resets, cut streams) plus the gateway's own rules (headers, auth, limits).
The same behaviours against real vLLM are in tests/integration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.support.fake_upstream import MODEL, DroppingUpstream, FakeUpstream
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]


RETRIES = 2


def gateway_for(upstream_url: str, **overrides: object) -> ThreadedServer:
    # Failures are what these tests provoke; a circuit that opened would hide them.
    backend = VllmSettings(
        url=upstream_url, read_timeout=1.0, total_timeout=5.0, circuit_failures=1000,
        retries=RETRIES,
    )  # fmt: skip
    settings = Settings(backends={"vllm": backend}, primary="vllm", **overrides)  # type: ignore[arg-type]
    return ThreadedServer(create_app(settings))


@pytest.fixture(scope="module")
def gateway(fake_upstream: Fake) -> Iterator[ThreadedServer]:
    with gateway_for(fake_upstream[1].url, max_body_bytes=4096) as server:
        yield server


@pytest.fixture
def client(gateway: ThreadedServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def ask(client: openai.OpenAI, cue: str, **kwargs: object) -> object:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": cue}],
        **kwargs,  # type: ignore[call-overload]
    )


def test_answer_carries_gateway_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": "req-123"},
    )
    assert raw.headers["x-request-id"] == "req-123"
    assert raw.headers["x-gateway-backend"] == "vllm"
    assert 0.0 < float(raw.headers["x-gateway-overhead-ms"]) < 1000.0
    assert raw.parse().choices[0].message.content == "hello from fake"


def test_unsafe_request_id_is_replaced(gateway: ThreadedServer) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=b"{}",
        headers={"x-request-id": "a b\tc"},
    )
    assert response.headers["x-request-id"] != "a b\tc"
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("cue", "error", "status"),
    [
        ("status:400", openai.BadRequestError, 400),
        ("status:422", openai.UnprocessableEntityError, 422),
        ("status:500", openai.InternalServerError, 502),
        ("status:503", openai.InternalServerError, 503),
        ("garbage", openai.InternalServerError, 502),
        ("hang", openai.InternalServerError, 504),
    ],
)
def test_upstream_failures_map_to_typed_errors(
    client: openai.OpenAI, cue: str, error: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as caught:
        ask(client, cue)
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert "Traceback" not in str(body)


def test_upstream_4xx_keeps_its_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "status:400")
    assert caught.value.message.endswith("fake 400")


def test_unreachable_backend_is_503() -> None:
    with gateway_for("http://127.0.0.1:9", models=[MODEL]) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            ask(client, "hi")
        assert caught.value.status_code == 503
        assert httpx.get(server.url + "/ready").status_code == 503
        assert httpx.get(server.url + "/health").status_code == 200


@pytest.mark.parametrize(
    ("cue", "message"),
    [
        ("stall-after-headers", "did not answer in time"),
        ("malformed-sse", "mid-event"),
        ("reset-mid-stream", "broke the connection"),
    ],
)
def test_failure_after_stream_start_is_an_sse_error_and_never_retried(
    client: openai.OpenAI, fake_upstream: Fake, cue: str, message: str
) -> None:
    before = fake_upstream[0].calls
    stream = ask(client, cue, stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)  # type: ignore[call-overload]
    assert message in caught.value.message
    assert fake_upstream[0].calls - before == 1  # the engine generated: sending again is unsafe


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_a_connection_dropped_before_the_answer_is_retried(reset: bool, stream: bool) -> None:
    """No byte of an answer came back, so nothing was generated for anyone: safe to resend."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    with (
        DroppingUpstream(reset=reset) as upstream,
        gateway_for(upstream.url, models=[MODEL]) as server,
    ):
        response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "backend_protocol_error"
    assert upstream.posts == 1 + RETRIES


def test_client_disconnect_stops_the_upstream_stream(
    client: openai.OpenAI, fake_upstream: Fake
) -> None:
    leave_early_and_see_the_upstream_cancelled(client, fake_upstream)


def leave_early_and_see_the_upstream_cancelled(client: openai.OpenAI, fake_upstream: Fake) -> None:
    """The client reads four chunks of a long stream and closes it: the upstream call ends."""
    app = fake_upstream[0]
    before = app.cancelled
    stream = ask(client, "long:500", stream=True)
    for index, _ in enumerate(cast("Iterable[object]", stream)):
        if index == 3:
            break
    stream.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 3
    while app.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.cancelled == before + 1


def test_client_disconnect_cancels_a_pending_completion(gateway: ThreadedServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "slow:0.5"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=0.1)
    time.sleep(0.6)
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'status="499"' in metrics


def test_body_too_large_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "x" * 10_000)
    assert caught.value.status_code == 413


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"


def test_unknown_route_is_openai_404(gateway: ThreadedServer) -> None:
    response = httpx.get(gateway.url + "/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["x-request-id"]


def test_api_keys_are_required_when_set(fake_upstream: Fake) -> None:
    with gateway_for(fake_upstream[1].url, api_keys=["k1"]) as server:
        anonymous = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            ask(anonymous, "hi")
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        keyed = openai.OpenAI(base_url=server.url + "/v1", api_key="k1", max_retries=0)
        assert ask(keyed, "hi").choices[0].message.content == "hello from fake"  # type: ignore[attr-defined]
        assert [model.id for model in keyed.models.list()] == [MODEL]


def test_public_names_map_to_the_served_name(fake_upstream: Fake) -> None:
    with gateway_for(fake_upstream[1].url, models=["pika-tagger", "phi-3-mini"]) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        assert sorted(m.id for m in client.models.list()) == ["phi-3-mini", "pika-tagger"]
        answer = client.chat.completions.create(
            model="phi-3-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.model == "phi-3-mini"
        chunks = list(
            client.chat.completions.create(
                model="phi-3-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        assert {chunk.model for chunk in chunks} == {"phi-3-mini"}
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])


def test_metrics_count_requests_and_overhead(
    client: openai.OpenAI, gateway: ThreadedServer
) -> None:
    ask(client, "hi")
    text = httpx.get(gateway.url + "/metrics").text
    labels = f'backend="vllm",path="/v1/chat/completions",route="{MODEL}",status="200"'
    assert f"gateway_requests_total{{{labels}}}" in text
    assert "gateway_overhead_seconds_bucket" in text
    assert "gateway_in_flight_requests" in text


def test_a_client_that_hangs_up_after_done_was_served(gateway: ThreadedServer) -> None:
    """SDKs may close once they read `[DONE]`, before the engine has ended its body: that
    client got its whole answer (a 200, and the primary leg of a shadow pair), not a 499."""
    counted = (
        f'gateway_requests_total{{backend="vllm",path="/v1/chat/completions",route="{MODEL}",'
        'status="%s"}'
    )

    def count(status: str) -> float:
        for line in httpx.get(gateway.url + "/metrics").text.splitlines():
            if line.startswith(counted % status + " "):
                return float(line.split()[-1])
        return 0.0

    before = count("200"), count("499")
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "linger-after-done"}],
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line == "data: [DONE]":
                break  # and hang up, as the engine's body is still open
    deadline = time.monotonic() + 5
    while count("200") == before[0]:
        assert time.monotonic() < deadline, "the request was never counted"
        time.sleep(0.05)
    assert (count("200"), count("499")) == (before[0] + 1, before[1])


def test_a_stream_ends_for_its_client_at_done_though_the_engine_lingers(
    gateway: ThreadedServer,
) -> None:
    """The engine's body stays open 2 s after `[DONE]`; the client's ends with `[DONE]`, and
    the request's duration is the client's, not the engine's."""
    series = (
        f'gateway_request_duration_seconds_sum{{backend="vllm",path="/v1/chat/completions",'
        f'route="{MODEL}",status="200"}}'
    )
    before = sample(httpx.get(gateway.url + "/metrics").text, series)
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "linger-after-done"}],
    }
    started = time.monotonic()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as response:
        data = b"".join(response.iter_bytes())  # to the end of the body, not only [DONE]
    elapsed = time.monotonic() - started
    assert data.endswith(b"data: [DONE]\n\n")
    assert elapsed < 0.5  # the gateway's read timeout (1 s) would end it, else the engine
    deadline = time.monotonic() + 5  # counted once the engine's body has ended
    while (after := sample(httpx.get(gateway.url + "/metrics").text, series)) == before:
        assert time.monotonic() < deadline, "the request was never counted"
        time.sleep(0.05)
    assert after - before < 0.5


def test_overhead_of_a_slow_answer_excludes_the_wait(client: openai.OpenAI) -> None:
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "slow:0.5"}]
    )
    assert time.monotonic() - started > 0.4
    assert float(raw.headers["x-gateway-overhead-ms"]) < 20.0


class PacedUpstream(FakeUpstream):
    """The fake upstream, plus `paced`: a stream of ten chunks 50 ms apart."""

    CHUNK = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"fake-model",'
        b'"choices":[{"index":0,"delta":{"content":"."},"finish_reason":null}]}\n\n'
    )

    async def _behave(self, cue: str, stream: bool, receive: Any, send: Any) -> None:
        if cue != "paced":
            await super()._behave(cue, stream, receive, send)
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(10):
            await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": self.CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def test_overhead_of_a_slow_stream_excludes_the_generation() -> None:
    """Waiting for each chunk is the engine's time, not the gateway's.

    Read with httpx: the SDK's parsing in this process would hold the GIL the gateway's
    thread needs, and that wait would count as overhead here (never in production).
    """
    body = {"model": MODEL, "messages": [{"role": "user", "content": "paced"}], "stream": True}
    with ThreadedServer(PacedUpstream()) as upstream, gateway_for(upstream.url) as server:
        url = server.url + "/v1/chat/completions"
        warm_up = {**body, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(url, json=warm_up).status_code == 200  # first-use costs
        count, total = overhead(server)
        started = time.monotonic()
        with httpx.stream("POST", url, json=body) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        elapsed = time.monotonic() - started
        count_after, total_after = overhead(server)
    assert len(events) == 11  # ten chunks, then [DONE]
    assert elapsed > 0.4
    assert count_after - count == 1
    assert total_after - total < 0.020


def overhead(server: ThreadedServer) -> tuple[float, float]:
    """Count and sum of the chat route's `gateway_overhead_seconds` histogram."""
    metrics = httpx.get(server.url + "/metrics").text
    route = '{path="/v1/chat/completions"}'
    return (
        sample(metrics, "gateway_overhead_seconds_count" + route),
        sample(metrics, "gateway_overhead_seconds_sum" + route),
    )


def sample(metrics: str, series: str) -> float:
    """The value of `series`; 0 while it has none (a label set not yet seen)."""
    lines = [line for line in metrics.splitlines() if line.startswith(series + " ")]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


EVENT_BYTES = 16_384


def socket_buffers_bytes() -> int:
    """The most two loopback connections (engine to gateway, gateway to client) can hold in
    their kernel buffers: each side's largest autotuned receive and send buffer."""
    most = [
        int(Path(f"/proc/sys/net/ipv4/tcp_{kind}").read_text().split()[2])
        for kind in ("rmem", "wmem")
    ]
    return 2 * sum(most)


class FloodUpstream(FakeUpstream):
    """The fake upstream, plus `flood`: `flood` numbered events of 16 KiB, sent back to back;
    `sent` counts those its server has taken."""

    def __init__(self, flood: int) -> None:
        super().__init__()
        self.flood = flood
        self.sent = 0

    async def _behave(self, cue: str, stream: bool, receive: Any, send: Any) -> None:
        if cue != "flood":
            await super()._behave(cue, stream, receive, send)
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index in range(self.flood):
            event = flood_event(index)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            self.sent += 1
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def flood_event(index: int) -> bytes:
    """Event `index`, padded to `EVENT_BYTES` whatever the number's width."""
    head = b'data: {"index":%d,"pad":"' % index
    return head + b"x" * (EVENT_BYTES - len(head) - 4) + b'"}\n\n'


def settled(read: Callable[[], int], quiet: float = 0.3, deadline: float = 10.0) -> int:
    """`read()` once it has not changed for `quiet` seconds (or at `deadline`)."""
    value, since, end = read(), time.monotonic(), time.monotonic() + deadline
    while time.monotonic() - since < quiet and time.monotonic() < end:
        time.sleep(0.05)
        if (now := read()) != value:
            value, since = now, time.monotonic()
    return value


def test_a_client_that_stops_reading_a_stream_pauses_the_engine_and_loses_nothing() -> None:
    # More than every socket between the engine and the client can hold, so an engine that
    # sent it all was read by a gateway that kept buffering for a client that did not read.
    flood = 2 * socket_buffers_bytes() // EVENT_BYTES
    upstream = FloodUpstream(flood)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "flood"}], "stream": True}
    url = "/v1/chat/completions"
    with (
        ThreadedServer(upstream) as engine,
        gateway_for(engine.url) as server,
        httpx.stream("POST", server.url + url, json=body) as response,
    ):
        # The client reads nothing: the engine's sending stops short of the end.
        got = settled(lambda: upstream.sent)
        assert got < flood
        received = response.iter_bytes()
        data = bytearray()
        for chunk in received:
            data += chunk
    assert len(data) == flood * EVENT_BYTES + len(b"data: [DONE]\n\n")
    for index in range(flood):
        assert data[index * EVENT_BYTES : (index + 1) * EVENT_BYTES] == flood_event(index)
    assert data.endswith(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def stock_client(fake_upstream: Fake) -> Iterator[openai.OpenAI]:
    """The gateway under uvicorn's own httptools protocol: no `write_body`, so the relay pulls
    each event and sends it through ASGI (`gateway.proxy.relay.Relay._pull`)."""
    backend = VllmSettings(url=fake_upstream[1].url, read_timeout=1.0, circuit_failures=1000)
    settings = Settings(backends={"vllm": backend}, primary="vllm")
    with (
        ThreadedServer(create_app(settings), http="httptools") as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client,
    ):
        yield client


def test_under_another_asgi_server_a_stream_is_relayed_event_by_event(
    stock_client: openai.OpenAI,
) -> None:
    stream = ask(stock_client, "long:5", stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream]  # type: ignore[attr-defined]
    assert pieces == ["hello", " from", " fake", *["."] * 5]


@pytest.mark.parametrize(
    ("cue", "message"),
    [("malformed-sse", "mid-event"), ("reset-mid-stream", "broke the connection")],
)
def test_under_another_asgi_server_a_failure_mid_stream_is_an_sse_error(
    stock_client: openai.OpenAI, cue: str, message: str
) -> None:
    stream = ask(stock_client, cue, stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)  # type: ignore[call-overload]
    assert message in caught.value.message


def test_under_another_asgi_server_a_client_disconnect_stops_the_upstream_stream(
    stock_client: openai.OpenAI, fake_upstream: Fake
) -> None:
    leave_early_and_see_the_upstream_cancelled(stock_client, fake_upstream)
