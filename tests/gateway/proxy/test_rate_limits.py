"""Per-client limits on the hot path, seen through the official openai SDK: requests and
tokens per minute and requests in flight, per API key and per route, answered with OpenAI's
429, `Retry-After` and `x-ratelimit-*` headers. Counted in the process here; shared through
Redis in `tests/gateway/ratelimit/test_two_gateways.py`, and charged from real vLLM's usage in
`tests/integration/test_rate_limits.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.ratelimit.config import RateLimits
from gateway.ratelimit.usage import BYTES_PER_PROMPT_TOKEN
from gateway.routes import RouteSettings
from gateway.settings import Settings
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]
KEYS = ["key-for-the-chat-app", "key-for-the-tagger"]
USED = 2  # prompt plus completion tokens of each of the fake upstream's answers
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def serving(fake: Fake, **settings: object) -> ThreadedServer:
    backend = VllmSettings(url=fake[1].url, circuit_failures=1000)
    keys = [SecretStr(key) for key in KEYS]
    return ThreadedServer(
        create_app(Settings(backends={"vllm": backend}, api_keys=keys, **settings))  # type: ignore[arg-type]
    )


@pytest.fixture
def limited(fake_upstream: Fake) -> Iterator[str]:
    limits = RateLimits(requests_per_minute=100, tokens_per_minute=5)
    with serving(fake_upstream, primary="vllm", models=[MODEL], rate_limits=limits) as server:
        yield server.url


def client(url: str, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_requests_per_minute_per_key_end_in_openai_s_429(fake_upstream: Fake) -> None:
    limits = RateLimits(requests_per_minute=3)
    with serving(fake_upstream, primary="vllm", models=[MODEL], rate_limits=limits) as server:
        chat_app = client(server.url)
        remaining = []
        for _ in range(3):
            raw = chat_app.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError) as refused:
            chat_app.chat.completions.create(model=MODEL, messages=MESSAGES)
        error = refused.value
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        assert error.type == "requests"
        assert error.response.headers["retry-after"] == "20"  # one request back at 3 a minute
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
        reset = error.response.headers["x-ratelimit-reset-requests"]
        assert 19.0 < float(reset.removesuffix("s")) <= 20.0
        assert KEYS[0] not in error.response.text
        tagger = client(server.url, KEYS[1])  # another key: a budget of its own
        tagger.chat.completions.create(model=MODEL, messages=MESSAGES)
        metrics = httpx.get(server.url + "/metrics").text
        assert f'gateway_rate_limited_total{{limit="requests",route="{MODEL}"}} 1.0' in metrics


def test_tokens_per_minute_are_charged_from_usage(limited: str) -> None:
    chat_app = client(limited)
    remaining = []
    for _ in range(3):  # 5 tokens, 2 an answer: 5, 3, 1 left before each
        raw = chat_app.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
        remaining.append(int(raw.headers["x-ratelimit-remaining-tokens"]))
    assert remaining == [5, 5 - USED, 5 - 2 * USED]
    with pytest.raises(openai.RateLimitError) as refused:  # 1 token in debt
        chat_app.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert refused.value.type == "tokens"
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.value.response.headers["retry-after"]) == 24  # 2 tokens at 5 a minute


def test_a_stream_without_usage_is_charged_the_estimate(limited: str) -> None:
    body = orjson.dumps({"model": MODEL, "messages": MESSAGES, "stream": True})
    headers = {"authorization": f"Bearer {KEYS[0]}"}
    with httpx.Client(base_url=limited, headers=headers) as http:
        assert http.post("/v1/chat/completions", content=body).status_code == 200
        after = http.post("/v1/chat/completions", content=orjson.dumps({"model": MODEL,
                          "messages": MESSAGES}))  # fmt: skip
    charged = 3 + len(body) // BYTES_PER_PROMPT_TOKEN  # three text events, the body's estimate
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == max(5 - charged, 0)
    assert charged > 5


def test_requests_in_flight_per_key(fake_upstream: Fake) -> None:
    limits = RateLimits(concurrent=2)
    with serving(fake_upstream, primary="vllm", models=[MODEL], rate_limits=limits) as server:

        async def three_at_once() -> list[str]:
            async with openai.AsyncOpenAI(
                base_url=server.url + "/v1", api_key=KEYS[0], max_retries=0
            ) as slow:

                async def one() -> str:
                    try:
                        await slow.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": "slow:0.5"}]
                        )
                        return "200"
                    except openai.RateLimitError as exc:
                        message = exc.response.json()["error"]["message"]
                        return f"{exc.status_code} {message.split(':')[0]}"

                return sorted(await asyncio.gather(one(), one(), one()))

        refused = "429 Rate limit reached for requests in flight on this API key"
        assert asyncio.run(three_at_once()) == ["200", "200", refused]


def test_a_route_s_own_limit_applies_to_each_key_on_that_route_only(fake_upstream: Fake) -> None:
    routes = {
        "chat": RouteSettings(primary="vllm", rate_limits=RateLimits(requests_per_minute=1)),
        "tagger-model": RouteSettings(primary="vllm"),
    }
    with serving(fake_upstream, routes=routes) as server:
        chat_app, tagger = client(server.url), client(server.url, KEYS[1])
        chat_app.chat.completions.create(model="chat", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as refused:
            chat_app.chat.completions.create(model="chat", messages=MESSAGES)
        assert "this API key on 'chat'" in refused.value.message
        tagger.chat.completions.create(model="chat", messages=MESSAGES)
        for _ in range(3):  # the other route has no limit
            chat_app.chat.completions.create(model="tagger-model", messages=MESSAGES)


def test_without_limits_answers_carry_no_rate_limit_headers(fake_upstream: Fake) -> None:
    with serving(fake_upstream, primary="vllm", models=[MODEL]) as server:
        raw = client(server.url).chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES
        )
        assert not [name for name in raw.headers if name.startswith("x-ratelimit")]
        assert "rate_limits" in httpx.get(server.url + "/ready").json()
