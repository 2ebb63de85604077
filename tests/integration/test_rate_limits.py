"""Tokens per minute charged from real vLLM's usage: what the engine reports for an answer,
streamed (with `include_usage`) or not, is what the key's budget loses."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.ratelimit.config import RateLimits
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine, sum_samples
from tests.support.servers import ThreadedServer

PER_MINUTE = 600  # tokens: ten come back each second, so the refill is small beside usage
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Con làm đúng rồi! 5 + 7 = 12"}
]


@pytest.fixture(scope="module")
def client(vllm_engine: VllmEngine) -> Iterator[openai.OpenAI]:
    settings = Settings(
        backends={"vllm": VllmSettings(url=vllm_engine.url)},
        primary="vllm",
        rate_limits=RateLimits(tokens_per_minute=PER_MINUTE),
    )
    with (
        ThreadedServer(create_app(settings)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client,
    ):
        yield client


def probe(client: openai.OpenAI) -> tuple[int, int]:
    """A one-token request: the tokens the key had left when it was admitted, and its usage."""
    raw = client.chat.completions.with_raw_response.create(
        model=TINY_MODEL, messages=MESSAGES, max_tokens=1
    )
    usage = raw.parse().usage
    assert usage is not None
    return int(raw.headers["x-ratelimit-remaining-tokens"]), usage.total_tokens


def charged_between(client: openai.OpenAI, used: int, began: float, left: tuple[int, int]) -> None:
    """Between two probes the budget lost the first probe's usage and `used`, less what it
    refilled meanwhile (at most ten tokens a second)."""
    after, _ = probe(client)
    lost = left[0] - after
    refilled = PER_MINUTE / 60 * (time.monotonic() - began)
    assert left[1] + used - refilled - 1 <= lost <= left[1] + used


def test_an_answer_is_charged_its_usage(client: openai.OpenAI) -> None:
    began, left = time.monotonic(), probe(client)
    answer = client.chat.completions.create(
        model=TINY_MODEL, messages=MESSAGES, max_tokens=8, temperature=0
    )
    assert answer.usage is not None
    charged_between(client, answer.usage.total_tokens, began, left)


def test_a_stream_with_include_usage_is_charged_its_usage(client: openai.OpenAI) -> None:
    began, left = time.monotonic(), probe(client)
    before = settled(client)
    stream = client.chat.completions.create(
        model=TINY_MODEL, messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1
    # A stream is charged as its request ends, a moment after the client read [DONE] (the
    # gateway's bookkeeping follows the last write): a probe sent at once once came first.
    deadline = time.monotonic() + 5
    while ended(client) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    charged_between(client, usage[0].total_tokens, began, left)


def ended(client: openai.OpenAI) -> float:
    """The requests the gateway has finished (counted after their tokens were charged)."""
    metrics = httpx.get(str(client.base_url).removesuffix("v1/") + "metrics").text
    return sum_samples(metrics, "gateway_requests_total", {})


def settled(client: openai.OpenAI) -> float:
    """`ended` once it stops moving: the requests before have all been counted."""
    previous, count = -1.0, ended(client)
    while count != previous:
        time.sleep(0.05)
        previous, count = count, ended(client)
    return count
