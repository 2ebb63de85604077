"""Mapping OpenAI fields onto TensorRT-LLM inputs, for every interface variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from backends.base import Route
from backends.chat_template import ChatTemplate
from backends.errors import InvalidRequest, UnsupportedParameter
from backends.sampling import OPENAI_DEFAULTS, Sampling, resolve
from backends.triton.interface import ModelInterface
from backends.triton.request import Generation, Tokenizing, generation, inputs_for

ENSEMBLE_INPUTS = [
    ("text_input", "TYPE_STRING", False), ("max_tokens", "TYPE_INT32", False),
    ("end_id", "TYPE_INT32", True), ("top_k", "TYPE_INT32", True), ("top_p", "TYPE_FP32", True),
    ("temperature", "TYPE_FP32", True), ("random_seed", "TYPE_UINT64", True),
    ("min_length", "TYPE_INT32", True), ("stop_words", "TYPE_STRING", True),
    ("exclude_input_in_output", "TYPE_BOOL", True), ("stream", "TYPE_BOOL", True),
    ("repetition_penalty", "TYPE_FP32", True),
]  # fmt: skip
LLMAPI_INPUTS = [  # config.pbtxt of the LLM-API model (backends/TENSORRT_LLM.md C)
    ("text_input", "TYPE_STRING", False), ("streaming", "TYPE_BOOL", True),
    ("sampling_param_best_of", "TYPE_INT32", True),
    ("sampling_param_temperature", "TYPE_FP32", True),
    ("sampling_param_top_k", "TYPE_INT32", True), ("sampling_param_top_p", "TYPE_FP32", True),
    ("sampling_param_frequency_penalty", "TYPE_FP32", True),
    ("sampling_param_presence_penalty", "TYPE_FP32", True),
    ("sampling_param_max_tokens", "TYPE_INT32", True),
    ("sampling_param_stop", "TYPE_STRING", True), ("sampling_param_seed", "TYPE_UINT64", True),
    ("sampling_param_exclude_input_from_output", "TYPE_BOOL", True),
    ("sampling_param_return_perf_metrics", "TYPE_BOOL", True),
    ("return_finish_reason", "TYPE_BOOL", True), ("return_stop_reason", "TYPE_BOOL", True),
    ("return_cumulative_logprob", "TYPE_BOOL", True),
]  # fmt: skip


def interface(inputs: list[tuple[str, str, bool]], batch: int, **extra: Any) -> ModelInterface:
    config = {
        "name": "m",
        "max_batch_size": batch,
        "input": [{"name": n, "data_type": t, "optional": o} for n, t, o in inputs],
        "output": [{"name": "text_output"}],
        "model_transaction_policy": {"decoupled": True},
        **extra,
    }
    return ModelInterface.from_config(config, "auto")


ENSEMBLE = interface(ENSEMBLE_INPUTS, batch=8)
LLMAPI = interface(LLMAPI_INPUTS, batch=0)


def plan(payload: dict[str, Any], room: int = 1000, model: ModelInterface = ENSEMBLE) -> Generation:
    body = {"model": "m", **payload}
    return generation(body, "prompt", room, 64, model, sampled(body))


def sampled(payload: dict[str, Any]) -> Sampling:
    """What the request runs with, on a model whose generation_config sets nothing."""
    return resolve(payload, {}, OPENAI_DEFAULTS)


def tensors(model: ModelInterface, gen: Generation, end_id: int | None = 6) -> dict[str, Any]:
    return {name: (dtype, array) for name, dtype, array in inputs_for(model, gen, end_id)}


def test_discovery_finds_old_and_new_names() -> None:
    assert ENSEMBLE.names["seed"] == "random_seed"
    assert ENSEMBLE.names["min_tokens"] == "min_length"
    assert LLMAPI.names["stream"] == "streaming"
    assert LLMAPI.names["max_tokens"] == "sampling_param_max_tokens"
    assert ENSEMBLE.batched
    assert not LLMAPI.batched
    assert not ENSEMBLE.cumulative
    assert LLMAPI.cumulative


def test_bls_with_accumulate_tokens_is_cumulative() -> None:
    bls = interface(
        ENSEMBLE_INPUTS, batch=8, parameters={"accumulate_tokens": {"string_value": "true"}}
    )
    assert bls.cumulative


def test_temperature_zero_is_greedy_top_k_1_with_batch_shapes() -> None:
    sent = tensors(ENSEMBLE, plan({"temperature": 0, "max_tokens": 5, "stop": "###"}))
    assert sent["top_k"][0] == "INT32"
    assert sent["top_k"][1].tolist() == [[1]]
    assert "temperature" not in sent
    assert sent["max_tokens"][1].shape == (1, 1)
    assert sent["text_input"][1].tolist() == [[b"prompt"]]
    assert sent["stop_words"][1].tolist() == [[b"###"]]
    assert sent["exclude_input_in_output"][1].tolist() == [[True]]
    assert sent["end_id"][1].tolist() == [[6]]


def test_temperature_alone_really_samples_with_a_fresh_seed() -> None:
    first, second = plan({"temperature": 0.7}), plan({"temperature": 0.7})
    assert first.top_p == 1.0
    assert first.temperature == pytest.approx(0.7)
    assert first.seed != second.seed
    sent = tensors(ENSEMBLE, first)
    assert sent["random_seed"][1].dtype == np.uint64


def test_llmapi_shapes_have_no_batch_dim() -> None:
    sent = tensors(LLMAPI, plan({"temperature": 0, "max_tokens": 7}, model=LLMAPI), end_id=None)
    assert sent["text_input"][1].shape == (1,)
    assert sent["sampling_param_max_tokens"][1].tolist() == [7]
    assert sent["sampling_param_exclude_input_from_output"][1].tolist() == [True]
    assert sent["return_finish_reason"][1].tolist() == [True]


def test_llmapi_gets_every_sampling_value_so_its_greedy_default_never_applies() -> None:
    """Left out, temperature, top_p and top_k would make the LLM API decode greedily."""
    sent = tensors(LLMAPI, plan({"temperature": 0.7, "max_tokens": 7}, model=LLMAPI))
    values = {name: array.tolist() for name, (_, array) in sent.items()}
    assert values["sampling_param_temperature"] == [pytest.approx(0.7)]
    assert values["sampling_param_top_p"] == [1.0]
    assert values["sampling_param_top_k"] == [0]  # the whole vocabulary, said explicitly
    assert values["sampling_param_presence_penalty"] == [0.0]
    assert values["sampling_param_frequency_penalty"] == [0.0]
    assert sent["sampling_param_seed"][0] == "UINT64"
    assert values["return_finish_reason"] == [True]
    assert not {name for name in sent if name.startswith(("return_stop", "return_cumul"))}
    greedy = tensors(LLMAPI, plan({"temperature": 0, "presence_penalty": 0.5}, model=LLMAPI))
    assert greedy["sampling_param_top_k"][1].tolist() == [1]
    assert "sampling_param_temperature" not in greedy  # top_k 1 is greedy; no temperature 0
    assert greedy["sampling_param_presence_penalty"][1].tolist() == [0.5]


@pytest.mark.parametrize(
    ("field", "value"), [("repetition_penalty", 1.1), ("min_tokens", 3), ("min_p", 0.1)]
)
def test_llmapi_refuses_what_it_cannot_set_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        tensors(LLMAPI, plan({field: value}, model=LLMAPI))
    assert caught.value.param == field
    if field != "min_p":  # the value that changes nothing passes (min_p is never honoured)
        tensors(LLMAPI, plan({field: {"repetition_penalty": 1.0, "min_tokens": 0}[field]},
                             model=LLMAPI))  # fmt: skip


def test_a_sampling_value_without_an_input_is_refused_unless_neutral() -> None:
    bare = interface([("text_input", "TYPE_STRING", False), ("max_tokens", "TYPE_INT32", False),
                      ("temperature", "TYPE_FP32", True), ("seed", "TYPE_UINT64", True)],
                     batch=8)  # fmt: skip
    sent = tensors(bare, plan({"temperature": 0.5, "top_p": 1.0}, model=bare))
    assert set(sent) >= {"temperature", "seed"}
    with pytest.raises(UnsupportedParameter) as caught:
        tensors(bare, plan({"temperature": 0.5, "top_p": 0.9}, model=bare))
    assert caught.value.param == "top_p"


def test_max_tokens_default_and_clamp() -> None:
    assert plan({}).max_tokens == 64
    assert plan({"max_tokens": 500}, room=100).max_tokens == 100
    with pytest.raises(InvalidRequest):
        plan({}, room=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("logprobs", True), ("n", 2), ("tools", [{"type": "function"}]), ("logit_bias", {"1": 2}),
     ("min_p", 0.1), ("response_format", {"type": "json_schema", "json_schema": {"schema": {}}})],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused(field: str, value: Any) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        plan({field: value})
    assert caught.value.param == field


def test_neutral_and_default_fields_are_accepted() -> None:
    plan({"user": "u1", "n": 1, "logprobs": False, "stream_options": {"include_usage": True}})


def test_llmapi_without_min_tokens_input_refuses_min_tokens() -> None:
    with pytest.raises(UnsupportedParameter):
        tensors(LLMAPI, plan({"min_tokens": 3}, model=LLMAPI))


def test_guided_decoding_maps_when_the_model_has_it() -> None:
    guided = interface(
        [*ENSEMBLE_INPUTS, ("guided_decoding_guide_type", "TYPE_STRING", True),
         ("guided_decoding_guide", "TYPE_STRING", True)], batch=8,
    )  # fmt: skip
    sent = tensors(guided, plan({"structured_outputs": {"choice": ["a", "b.c"]}}, model=guided))
    assert sent["guided_decoding_guide_type"][1].tolist() == [[b"regex"]]
    assert sent["guided_decoding_guide"][1].tolist() == [[b"(a|b\\.c)"]]
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    sent = tensors(guided, plan({"response_format": schema}, model=guided))
    assert sent["guided_decoding_guide"][1].tolist() == [[b'{"type": "object"}']]


def test_the_turn_end_is_a_stop_word_when_there_is_no_end_id() -> None:
    """A built-in template without a tokenizer has no end id to send: its text stops instead."""
    body: dict[str, Any] = {"model": "m", "stop": "###"}
    ended = generation(body, "prompt", 100, 64, ENSEMBLE, sampled(body), "<|end|>")
    assert ended.stops == ("###", "<|end|>")
    sent = tensors(ENSEMBLE, ended, end_id=None)
    assert sent["stop_words"][1].tolist() == [[b"###", b"<|end|>"]]
    assert "end_id" not in sent
    body = {"model": "m", "stop": ["<|end|>"]}
    again = generation(body, "prompt", 100, 64, LLMAPI, sampled(body), "<|end|>")
    assert tensors(LLMAPI, again, end_id=None)["sampling_param_stop"][1].tolist() == [b"<|end|>"]
    assert plan({"stop": "###"}).stops == ("###",)


# The original Phi-3 template writes BOS itself; the June-2024 one (the tiny model's) writes none.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n<|assistant|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
)
MESSAGES = [
    {"role": "user", "content": "con sợ sai lắm... 9 ạ?"},
    {"role": "assistant", "content": "Đúng rồi, 9!"},
    {"role": "user", "content": "Thật ạ?"},
]
PROMPT = "Pika ơi, 2 + 3 bằng mấy?"


def engine_ids(
    tiny_model_dir: Path, add_special_tokens: bool, route: Route, source: str | None = None
) -> tuple[list[int], list[int]]:
    """(what the engine's tokenizer reads from the gateway's text_input, what vLLM reads)."""
    reference = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = ChatTemplate.from_tokenizer_dir(tiny_model_dir)
    if source is not None:
        template = ChatTemplate(source, {"bos_token": "<s>"}, "<|end|>")
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    tokenizing = Tokenizing.of(add_special_tokens, tokenizer, template.bos_token)
    payload = {"messages": MESSAGES} if route is Route.CHAT else {"prompt": PROMPT}
    text = tokenizing.text_input(route, payload, template)
    sent = reference.encode(text, add_special_tokens=add_special_tokens)
    if route is Route.COMPLETIONS:  # vLLM's /v1/completions: with special tokens
        return sent, reference.encode(PROMPT, add_special_tokens=True)
    rendered = reference.apply_chat_template(
        MESSAGES, chat_template=source, tokenize=False, add_generation_prompt=True
    )  # vLLM's chat: the rendered template, without special tokens
    return sent, reference.encode(rendered, add_special_tokens=False)


@pytest.mark.parametrize("source", [None, BOS_TEMPLATE], ids=["no-bos", "bos-template"])
@pytest.mark.parametrize("route", [Route.CHAT, Route.COMPLETIONS])
def test_without_special_tokens_the_engine_reads_vllms_ids(
    tiny_model_dir: Path, route: Route, source: str | None
) -> None:
    sent, vllm = engine_ids(tiny_model_dir, False, route, source)
    assert sent == vllm
    # A BOS where vLLM has one: a completion's, or the one a template writes; else none.
    assert sent.count(1) == (0 if route is Route.CHAT and source is None else 1)


@pytest.mark.parametrize(
    ("route", "source"),
    [(Route.COMPLETIONS, None), (Route.CHAT, BOS_TEMPLATE), (Route.COMPLETIONS, BOS_TEMPLATE)],
)
def test_with_special_tokens_the_engine_reads_vllms_ids_unless_no_bos_is_written(
    tiny_model_dir: Path, route: Route, source: str | None
) -> None:
    sent, vllm = engine_ids(tiny_model_dir, True, route, source)
    assert sent == vllm  # a template's BOS is dropped, as the engine adds it back


def test_with_special_tokens_a_chat_without_a_template_bos_gets_one_more(
    tiny_model_dir: Path,
) -> None:
    sent, vllm = engine_ids(tiny_model_dir, True, Route.CHAT)
    assert sent == [1, *vllm]  # the limit the gateway warns about at start


def test_a_tokenizer_that_adds_no_bos_gets_none_prepended(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_str(json.dumps({**config, "post_processor": None}))
    tokenizing = Tokenizing.of(False, tokenizer, "<s>")
    assert tokenizing == Tokenizing(False, "")
    template = ChatTemplate(BOS_TEMPLATE, {"bos_token": "<s>"}, "<|end|>")
    assert tokenizing.text_input(Route.COMPLETIONS, {"prompt": "Hi"}, template) == "Hi"
    assert Tokenizing.of(True, tokenizer, "<s>").strips_template_bos is False
    assert Tokenizing.of(True, None, "<s>") == Tokenizing(True, "")


@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": True}, {"enable_thinking": False}])
def test_text_input_renders_the_requests_chat_template_kwargs(
    tiny_qwen3_dir: Path, kwargs: dict[str, Any]
) -> None:
    """Qwen3's `enable_thinking` reaches the template as vLLM passes it (transformers renders
    the reference); false closes an empty think block after the generation prompt."""
    reference = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    template = ChatTemplate.from_tokenizer_dir(tiny_qwen3_dir)
    payload = {"messages": MESSAGES, "chat_template_kwargs": kwargs}
    text = Tokenizing(add_special_tokens=True).text_input(Route.CHAT, payload, template)
    expected = reference.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True, **kwargs
    )
    assert text == expected
    assert text.endswith("<think>\n\n</think>\n\n") == (kwargs.get("enable_thinking") is False)
