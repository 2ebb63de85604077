"""The `trtllm-serve` kind: OpenAI over HTTP, with fields trtllm-serve would reject kept out.

trtllm-serve needs a GPU, so its one behaviour that matters here (400 on any unknown field) is
played by a strict relay in front of the real vLLM engine, which does the generating.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.base import Route
from backends.errors import UnsupportedParameter
from backends.trtllm_serve import CHAT_FIELDS, TrtllmServeSettings, keep_known_fields
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import ThreadedServer

pytestmark = pytest.mark.slow  # starts a real vLLM engine of its own

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Xin chào Pika"}]


class StrictRelay:
    """Refuses unknown fields with 400 like trtllm-serve, else relays to vLLM."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            if scope["method"] == "GET":
                response = await client.get(scope["path"])
                await _reply(send, response.status_code, response.content)
                return
            payload = orjson.loads(body)
            self.bodies.append(payload)
            unknown = sorted(set(payload) - CHAT_FIELDS)
            if unknown:
                error = {"error": {"message": f"extra fields not permitted: {unknown}"}}
                await _reply(send, 400, orjson.dumps(error))
                return
            response = await client.post(
                scope["path"], content=body, timeout=60,
                headers={"content-type": "application/json"},
            )  # fmt: skip
            await _reply(send, response.status_code, response.content)


async def _reply(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def relay(vllm_engine: VllmEngine) -> Iterator[tuple[StrictRelay, ThreadedServer]]:
    app = StrictRelay(vllm_engine.url)
    with ThreadedServer(app) as server:
        yield app, server


@pytest.fixture(scope="module")
def client(relay: tuple[StrictRelay, ThreadedServer]) -> Iterator[openai.OpenAI]:
    backend = TrtllmServeSettings(url=relay[1].url, model=TINY_MODEL)
    settings = Settings(backends={"trt": backend}, primary="trt", models=["phi-3-mini"])
    with ThreadedServer(create_app(settings)) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def test_answers_like_the_engine_behind_it(
    client: openai.OpenAI, vllm_engine: VllmEngine, relay: tuple[StrictRelay, ThreadedServer]
) -> None:
    direct = openai.OpenAI(base_url=vllm_engine.url + "/v1", api_key="x")
    expected = direct.chat.completions.create(
        model=TINY_MODEL, messages=MESSAGES, temperature=0, max_tokens=10, extra_body={"top_k": 1}
    )
    answer = client.chat.completions.create(
        model="phi-3-mini", messages=MESSAGES, temperature=0, max_tokens=10,
        extra_body={"top_k": 1, "vllm_xargs": None},
    )  # fmt: skip
    assert answer.choices[0].message.content == expected.choices[0].message.content
    assert answer.model == "phi-3-mini"
    sent = relay[0].bodies[-1]
    assert set(sent) <= CHAT_FIELDS
    assert "vllm_xargs" not in sent


def test_a_meaningful_field_it_lacks_is_refused_before_sending(
    client: openai.OpenAI, relay: tuple[StrictRelay, ThreadedServer]
) -> None:
    before = len(relay[0].bodies)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="phi-3-mini", messages=MESSAGES,
            extra_body={"guided_json": {"type": "object"}},
        )  # fmt: skip
    assert caught.value.body["param"] == "guided_json"  # type: ignore[index]
    assert len(relay[0].bodies) == before


def test_keep_known_fields() -> None:
    assert keep_known_fields(Route.CHAT, {"model": "m", "messages": []}) is None
    assert keep_known_fields(Route.CHAT, {"model": "m", "messages": [], "store": None}) == {
        "model": "m", "messages": []}  # fmt: skip
    with pytest.raises(UnsupportedParameter):
        keep_known_fields(Route.COMPLETIONS, {"model": "m", "prompt": "x", "guided_json": {}})
