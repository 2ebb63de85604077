"""The `trtllm-serve` kind: what the gateway sends trtllm-serve, pure; and, through the gateway,
against the stand-in that answers as trtllm-serve's sources say (tests/engines/)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.base import Route, UpstreamRequest
from backends.errors import UnsupportedParameter
from backends.prompting import Prompter
from backends.trtllm_serve import TrtllmServeDialect, TrtllmServeSettings, keep_known_fields
from gateway.app import create_app
from gateway.settings import Settings
from tests.engines.hooks import fails_after
from tests.engines.trtllm_serve_engine import TrtllmServeEngine
from tests.support.servers import ThreadedServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Xin chào Pika"}]
QWEN3_DEFAULTS = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}


def request(payload: Mapping[str, Any], route: Route = Route.CHAT) -> UpstreamRequest:
    return UpstreamRequest(route, orjson.dumps(payload), payload, "m", "r1", False)


def with_defaults(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the model's small files whose generation_config.json sets Qwen3's defaults."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    (tmp_path / "generation_config.json").write_text(json.dumps(QWEN3_DEFAULTS))
    return tmp_path


def test_keep_known_fields() -> None:
    assert keep_known_fields(Route.CHAT, {"model": "m", "messages": []}) is None
    assert keep_known_fields(Route.CHAT, {"model": "m", "messages": [], "store": None}) == {
        "model": "m", "messages": []}  # fmt: skip
    with pytest.raises(UnsupportedParameter):
        keep_known_fields(Route.COMPLETIONS, {"model": "m", "prompt": "x", "guided_json": {"a": 1}})


def test_a_body_it_takes_goes_as_the_client_sent_it(tmp_path: Path) -> None:
    dialect = TrtllmServeDialect(TrtllmServeSettings(url="http://127.0.0.1:1"))
    outgoing = dialect.payload(request({"model": "m", "messages": [], "temperature": 0}))
    assert outgoing.changed is None
    assert outgoing.prompt_ids is None


def test_the_models_defaults_are_sent_for_fields_the_request_leaves_out(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """trtllm-serve would sample at 1.0 where vLLM applies generation_config.json's 0.6."""
    settings = TrtllmServeSettings(url="http://127.0.0.1:1")
    settings = settings.model_copy(update={"model_dir": with_defaults(tiny_model_dir, tmp_path)})
    body = {"model": "m", "messages": MESSAGES, "top_p": 0.5}
    outgoing = TrtllmServeDialect(settings).payload(request(body))
    assert outgoing.changed is not None
    assert (outgoing.changed["temperature"], outgoing.changed["top_k"]) == (0.6, 20)
    assert outgoing.changed["top_p"] == 0.5  # the request's own value wins
    assert TrtllmServeDialect(settings).sampling(request(body)).temperature == 0.6


def test_with_model_dir_the_prompt_goes_as_the_ids_vllm_reads(tiny_model_dir: Path) -> None:
    settings = TrtllmServeSettings(url="http://127.0.0.1:1", model_dir=tiny_model_dir)
    dialect = TrtllmServeDialect(settings)
    chat = dialect.payload(request({"model": "m", "messages": MESSAGES}))
    expected = Prompter.from_dir(tiny_model_dir).prompt_ids(Route.CHAT, {"messages": MESSAGES})
    assert chat.changed is not None
    assert chat.changed["prompt_token_ids"] == expected
    assert chat.prompt_ids == tuple(expected)
    completion = dialect.payload(request({"model": "m", "prompt": "Xin"}, Route.COMPLETIONS))
    assert completion.changed is not None
    assert completion.changed["prompt"] == list(completion.prompt_ids or ())


def test_vllms_structured_outputs_become_its_response_format() -> None:
    dialect = TrtllmServeDialect(TrtllmServeSettings(url="http://127.0.0.1:1"))
    body = {"model": "m", "messages": [], "structured_outputs": {"choice": ["vui", "buồn"]}}
    outgoing = dialect.payload(request(body))
    assert outgoing.changed is not None
    assert "structured_outputs" not in outgoing.changed
    assert outgoing.changed["response_format"] == {"type": "regex", "regex": "(vui|buồn)"}


def test_an_openai_json_schema_goes_as_its_own_json_type() -> None:
    """Builds before the wrapper fix read `{"name", "schema"}` as the schema (facts A.3)."""
    dialect = TrtllmServeDialect(TrtllmServeSettings(url="http://127.0.0.1:1"))
    schema = {"type": "object", "properties": {"mood": {"enum": ["vui"]}}}
    wrapper = {"type": "json_schema", "json_schema": {"name": "m", "schema": schema}}
    outgoing = dialect.payload(request({"model": "m", "messages": [], "response_format": wrapper}))
    assert outgoing.changed is not None
    assert outgoing.changed["response_format"] == {"type": "json", "schema": schema}


@pytest.fixture(scope="module")
def client(
    trtllm_serve_guided_engine: TrtllmServeEngine, tiny_model_dir: Path
) -> Iterator[openai.OpenAI]:
    """The stand-in with a guided-decoding backend, as stage 2 should run it."""
    backend = TrtllmServeSettings(url=trtllm_serve_guided_engine.url, model_dir=tiny_model_dir)
    settings = Settings(backends={"trt": backend}, primary="trt", models=["phi-3-mini"])
    with ThreadedServer(create_app(settings)) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def test_the_gateway_answers_as_the_engine_does(
    client: openai.OpenAI, trtllm_serve_guided_engine: TrtllmServeEngine, tiny_model_dir: Path
) -> None:
    url = trtllm_serve_guided_engine.url + "/v1"
    direct = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    ids = Prompter.from_dir(tiny_model_dir).prompt_ids(Route.CHAT, {"messages": MESSAGES})
    expected = direct.chat.completions.create(
        model="x", messages=MESSAGES, temperature=0, max_tokens=10,
        extra_body={"prompt_token_ids": ids},
    )  # fmt: skip
    answer = client.chat.completions.create(
        model="phi-3-mini", messages=MESSAGES, temperature=0, max_tokens=10
    )
    assert answer.choices[0].message.content == expected.choices[0].message.content
    assert answer.model == "phi-3-mini"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(ids)


def test_a_choice_is_honoured_through_its_guided_decoding(client: openai.OpenAI) -> None:
    answers = {
        client.chat.completions.create(
            model="phi-3-mini", messages=MESSAGES, temperature=1.0, max_tokens=8, seed=seed,
            extra_body={"structured_outputs": {"choice": ["vui", "buồn"]}},
        ).choices[0].message.content
        for seed in range(4)
    }  # fmt: skip
    assert answers <= {"vui", "buồn"}


def test_a_meaningful_field_it_lacks_is_refused_before_sending(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="phi-3-mini", messages=MESSAGES, extra_body={"guided_json": {"type": "object"}}
        )
    assert caught.value.body["param"] == "guided_json"  # type: ignore[index]


def test_a_chat_stream_the_engine_cuts_ends_with_an_error_event(client: openai.OpenAI) -> None:
    """trtllm-serve cuts a chat stream on an engine error, with no event and no [DONE]."""
    stream = client.chat.completions.create(
        model="phi-3-mini", messages=[{"role": "user", "content": fails_after(2)}],
        max_tokens=20, stream=True,
    )  # fmt: skip
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
