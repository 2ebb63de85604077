"""Tests for the Triton engine: a real Triton server with TensorRT-LLM's tensor interfaces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
import tritonclient.grpc.aio as grpc_aio
from transformers import AutoTokenizer, Phi3ForCausalLM, PreTrainedTokenizerBase
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.engines.triton_engine import TritonEngine

VIETNAMESE = "Chúc mừng con!"
TEXT_MODELS = ("ensemble", "tensorrt_llm_bls")


@dataclass
class Reply:
    """One streamed response: its outputs (decoded strings or ints) and its final flag."""

    outputs: dict[str, Any]
    final: bool


@pytest.fixture(scope="module")
def engine(triton_engine: TritonEngine) -> TritonEngine:
    return triton_engine


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _batched(**values: Any) -> dict[str, npt.NDArray[Any]]:
    """Inputs for the ensemble and BLS: every tensor is ``[1, 1]`` (``[1, N]`` for lists)."""
    return {name: _array(value, batched=True) for name, value in values.items()}


def _unbatched(**values: Any) -> dict[str, npt.NDArray[Any]]:
    """Inputs for the LLM-API model: no batch dim."""
    return {name: _array(value, batched=False) for name, value in values.items()}


def _array(value: Any, *, batched: bool) -> npt.NDArray[Any]:
    items = value if isinstance(value, list) else [value]
    if isinstance(items[0], str):
        array = np.array(items, dtype=object)
    elif isinstance(items[0], bool):
        array = np.array(items, dtype=np.bool_)
    elif isinstance(items[0], float):
        array = np.array(items, dtype=np.float32)
    else:
        array = np.array(items, dtype=np.int32)
    return array.reshape(1, -1) if batched else array


def _seed(value: int, *, batched: bool) -> npt.NDArray[Any]:
    return np.array([[value]] if batched else [value], dtype=np.uint64)


def _decode(array: npt.NDArray[Any] | None) -> Any:
    if array is None:
        return None
    item = array.reshape(-1)[0]
    return item.decode("utf-8") if isinstance(item, bytes) else int(item)


async def _stream(
    url: str, model: str, inputs: dict[str, npt.NDArray[Any]], outputs: tuple[str, ...]
) -> list[Reply]:
    """Send one request on its own gRPC stream and collect responses until the stream ends."""
    tensors = []
    for name, array in inputs.items():
        tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {
            "model_name": model,
            "inputs": tensors,
            "outputs": [InferRequestedOutput(name) for name in outputs],
        }

    replies = []
    async with grpc_aio.InferenceServerClient(url) as client:
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                raise error
            flag = result.get_response().parameters.get("triton_final_response")
            decoded = {name: _decode(result.as_numpy(name)) for name in outputs}
            replies.append(Reply(decoded, bool(flag and flag.bool_param)))
    return replies


def _call(
    engine: TritonEngine,
    model: str,
    inputs: dict[str, npt.NDArray[Any]],
    outputs: tuple[str, ...] = ("text_output",),
) -> list[Reply]:
    return asyncio.run(_stream(engine.grpc_url, model, inputs, outputs))


def _texts(replies: list[Reply]) -> list[str]:
    return [reply.outputs["text_output"] for reply in replies]


def _only_text(replies: list[Reply]) -> str:
    assert len(replies) == 1
    text: str = replies[0].outputs["text_output"]
    return text


def _config(engine: TritonEngine, model: str) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        async with grpc_aio.InferenceServerClient(engine.grpc_url) as client:
            answer: dict[str, Any] = await client.get_model_config(model, as_json=True)
            return answer

    config: dict[str, Any] = asyncio.run(fetch())["config"]
    return config


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_models_have_the_ensemble_interface(engine: TritonEngine, model: str) -> None:
    config = _config(engine, model)
    assert int(config["max_batch_size"]) > 0
    assert config["model_transaction_policy"]["decoupled"] is True
    inputs = {tensor["name"]: tensor for tensor in config["input"]}
    assert {"text_input", "max_tokens", "stream", "end_id", "stop_words", "seed"} <= set(inputs)
    assert "exclude_input_in_output" in inputs
    required = {name for name, tensor in inputs.items() if not tensor.get("optional")}
    assert required == {"text_input", "max_tokens"}
    assert inputs["stop_words"]["data_type"] == "TYPE_STRING"
    assert inputs["stop_words"]["dims"] == ["-1"]
    assert inputs["seed"]["data_type"] == "TYPE_UINT64"
    for name in ("guided_decoding_guide_type", "guided_decoding_guide"):
        assert inputs[name]["data_type"] == "TYPE_STRING"
        assert inputs[name]["dims"] == ["1"]
    outputs = {tensor["name"] for tensor in config["output"]}
    assert outputs == {"text_output", "num_input_tokens", "num_output_tokens"}


def test_llmapi_model_has_no_batch_dim(engine: TritonEngine) -> None:
    config = _config(engine, "tensorrt_llm")
    assert int(config.get("max_batch_size", 0)) == 0
    assert config["model_transaction_policy"]["decoupled"] is True
    inputs = {tensor["name"] for tensor in config["input"]}
    assert {"text_input", "streaming", "sampling_param_max_tokens", "sampling_param_stop"} <= inputs
    assert "stream" not in inputs
    assert not {name for name in inputs if name.startswith("guided_decoding")}
    assert {tensor["name"] for tensor in config["output"]} == {"text_output", "finish_reason"}


def test_non_streaming_ensemble_echoes_the_prompt_unless_excluded(engine: TritonEngine) -> None:
    prompt = "The gateway forwards each request"
    counts = ("text_output", "num_input_tokens", "num_output_tokens")
    flags = {"return_num_input_tokens": True, "return_num_output_tokens": True}
    echoed = _call(engine, "ensemble", _batched(text_input=prompt, max_tokens=8, **flags), counts)
    excluded = _call(
        engine,
        "ensemble",
        _batched(text_input=prompt, max_tokens=8, exclude_input_in_output=True, **flags),
        counts,
    )
    assert echoed[0].outputs["text_output"] == prompt + excluded[0].outputs["text_output"]
    assert not excluded[0].outputs["text_output"].startswith(prompt)
    assert excluded[0].outputs["num_output_tokens"] == 8
    # As on the C++ backend, the echoed prompt's tokens count as output tokens too.
    prompt_tokens = excluded[0].outputs["num_input_tokens"]
    assert echoed[0].outputs["num_output_tokens"] == prompt_tokens + 8


def test_counts_are_only_returned_when_asked(engine: TritonEngine) -> None:
    outputs = ("text_output", "num_input_tokens", "num_output_tokens")
    replies = _call(engine, "ensemble", _batched(text_input="Hi", max_tokens=2), outputs)
    assert replies[0].outputs["num_input_tokens"] is None
    assert replies[0].outputs["num_output_tokens"] is None


def test_streamed_ensemble_garbles_vietnamese_while_bls_accumulates(
    engine: TritonEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    inputs = _batched(
        text_input=f"Say it [[force:{VIETNAMESE}]]", max_tokens=40, stream=True, end_id=end_of_turn
    )
    deltas = _call(engine, "ensemble", inputs)
    cumulative = _call(engine, "tensorrt_llm_bls", inputs)
    ids = tokenizer.encode(VIETNAMESE, add_special_tokens=False)
    # One response per token, then an empty one for the end token.
    assert _texts(deltas) == [tokenizer.decode([token]) for token in ids] + [""]
    assert "\ufffd" in "".join(_texts(deltas))
    prefixes = [tokenizer.decode(ids[:n]) for n in range(1, len(ids) + 1)]
    assert _texts(cumulative) == [*prefixes, VIETNAMESE]
    # No data response is flagged final: the flag comes alone, and the stream just ends.
    assert not any(reply.final for reply in deltas + cumulative)


def test_default_end_id_runs_past_end_of_turn(
    engine: TritonEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    forced = "Xin chào"
    common = {"text_input": f"[[force:{forced}]]", "max_tokens": 30}
    outputs = ("text_output", "num_output_tokens")
    flags = {"exclude_input_in_output": True, "return_num_output_tokens": True}
    default = _call(engine, "ensemble", _batched(**common, **flags), outputs)[0].outputs
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    stopped = _call(engine, "ensemble", _batched(**common, **flags, end_id=end_of_turn), outputs)
    forced_tokens = len(tokenizer.encode(forced, add_special_tokens=False))
    assert default["text_output"].startswith(forced)
    assert default["num_output_tokens"] > forced_tokens + 1
    assert stopped[0].outputs == {"text_output": forced, "num_output_tokens": forced_tokens}


def test_stop_words_match_token_ids_and_stay_in_the_output(engine: TritonEngine) -> None:
    prompt = "[[force:Xin chào bạn ơi]]"
    common = {"text_input": prompt, "max_tokens": 20, "exclude_input_in_output": True}
    in_context = _call(engine, "ensemble", _batched(**common, stop_words=[" chào"]))
    alone = _call(engine, "ensemble", _batched(**common, stop_words=["chào"]))
    assert _only_text(in_context) == "Xin chào"
    # "chào" alone tokenizes differently from " chào" after a word, so it never matches.
    assert _only_text(alone).startswith("Xin chào bạn ơi")


def test_llmapi_cuts_stop_strings_and_reports_finish_reasons(engine: TritonEngine) -> None:
    prompt = "[[force:Xin chào bạn]]"
    outputs = ("text_output", "finish_reason")
    common = {"text_input": prompt, "return_finish_reason": True}
    excluded = {"sampling_param_exclude_input_from_output": True}
    stopped = _call(
        engine,
        "tensorrt_llm",
        _unbatched(**common, **excluded, sampling_param_stop=["chào"]),
        outputs,
    )
    assert stopped[0].outputs == {"text_output": "Xin ", "finish_reason": "stop"}
    at_end = _call(engine, "tensorrt_llm", _unbatched(**common, **excluded), outputs)
    # The LLM API honours every eos id of generation_config.json, <|end|> included.
    assert at_end[0].outputs == {"text_output": "Xin chào bạn", "finish_reason": "stop"}
    cut_short = _call(
        engine,
        "tensorrt_llm",
        _unbatched(**common, **excluded, sampling_param_max_tokens=2),
        outputs,
    )
    assert cut_short[0].outputs["finish_reason"] == "length"
    echoed = _call(engine, "tensorrt_llm", _unbatched(**common), outputs)
    assert echoed[0].outputs["text_output"] == prompt + "Xin chào bạn"


def test_llmapi_streams_cumulative_text(engine: TritonEngine) -> None:
    inputs = _unbatched(
        text_input=f"[[force:{VIETNAMESE}]]", streaming=True, return_finish_reason=True
    )
    replies = _call(engine, "tensorrt_llm", inputs, ("text_output", "finish_reason"))
    assert replies[-1].outputs == {"text_output": VIETNAMESE, "finish_reason": "stop"}
    # The real model sends str(None) until the answer is finished.
    assert {reply.outputs["finish_reason"] for reply in replies[:-1]} == {"None"}


def test_greedy_output_equals_transformers_generate(
    engine: TritonEngine, tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    prompt = "<|user|>\nWhat is the capital of Vietnam?<|end|>\n<|assistant|>\n"
    inputs = _batched(text_input=prompt, max_tokens=20, exclude_input_in_output=True)
    served = _only_text(_call(engine, "ensemble", inputs))
    model = Phi3ForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    encoded = tokenizer(prompt, return_tensors="pt")
    generated = model.generate(  # type: ignore[misc]  # transformers' generate stub mistypes self
        **encoded, max_new_tokens=20, do_sample=False, eos_token_id=tokenizer.eos_token_id
    )
    new_ids = generated[0, encoded["input_ids"].shape[1] :]
    assert served == tokenizer.decode(new_ids, skip_special_tokens=True)


def test_temperature_alone_is_greedy_and_seeds_repeat_samples(engine: TritonEngine) -> None:
    base = {"text_input": "Hello", "max_tokens": 12, "exclude_input_in_output": True}
    greedy = _only_text(_call(engine, "ensemble", _batched(**base)))
    warm = _only_text(_call(engine, "ensemble", _batched(**base, temperature=1.5)))
    assert warm == greedy

    def sample(seed: int) -> str:
        inputs = {**_batched(**base, top_p=1.0, temperature=1.5), "seed": _seed(seed, batched=True)}
        return _only_text(_call(engine, "ensemble", inputs))

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)} | {greedy}) > 2


def test_invalid_requests_come_back_as_triton_errors(engine: TritonEngine) -> None:
    with pytest.raises(InferenceServerException, match="missing required input"):
        _call(engine, "ensemble", _batched(text_input="Hi"))
    with pytest.raises(InferenceServerException, match="exceeds maximum sequence length"):
        _call(engine, "ensemble", _batched(text_input="Hi", max_tokens=5000))
    with pytest.raises(InferenceServerException, match="unexpected shape"):
        _call(engine, "tensorrt_llm", _batched(text_input="Hi"))


def test_concurrent_streams_match_sequential_answers(engine: TritonEngine) -> None:
    prompts = ("The weather in Da Nang", "Phở bò là món ăn")

    def inputs(prompt: str) -> dict[str, npt.NDArray[Any]]:
        return _batched(text_input=prompt, max_tokens=25, stream=True)

    async def both() -> list[list[Reply]]:
        calls = (_stream(engine.grpc_url, "ensemble", inputs(p), ("text_output",)) for p in prompts)
        return list(await asyncio.gather(*calls))

    together = asyncio.run(both())
    alone = [_call(engine, "ensemble", inputs(prompt)) for prompt in prompts]
    assert [_texts(replies) for replies in together] == [_texts(replies) for replies in alone]


CHOICES = ("vui", "buồn", "tự hào")


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_a_regex_guide_keeps_sampled_answers_to_its_choices(
    engine: TritonEngine, model: str
) -> None:
    """The gateway sends a choice as an escaped alternation; byte-split characters included."""
    guide = "(vui|buồn|tự\\ hào)"
    base = {"text_input": "<|user|>\nHôm nay bạn thấy thế nào?<|end|>\n<|assistant|>\n",
            "max_tokens": 20, "exclude_input_in_output": True, "top_p": 1.0,
            "guided_decoding_guide_type": "regex", "guided_decoding_guide": guide}  # fmt: skip
    answers = [
        _only_text(_call(engine, model, {**_batched(**base), "seed": _seed(seed, batched=True)}))
        for seed in range(6)
    ]
    assert set(answers) <= set(CHOICES)
    assert len(set(answers)) > 1  # sampling still chooses among them
    unguided = {name: value for name, value in base.items() if not name.startswith("guided")}
    assert _only_text(_call(engine, model, _batched(**unguided))) not in CHOICES


def test_a_json_schema_guide_gives_json_the_schema_accepts(engine: TritonEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"mood": {"enum": ["happy", "sad"]}, "sure": {"type": "boolean"}},
    }
    inputs = _batched(
        text_input="Hello", max_tokens=60, exclude_input_in_output=True,
        guided_decoding_guide_type="json_schema", guided_decoding_guide=json.dumps(schema),
    )  # fmt: skip
    answer = json.loads(_only_text(_call(engine, "ensemble", inputs)))
    assert list(answer) == ["mood", "sure"]
    assert answer["mood"] in ("happy", "sad")
    assert isinstance(answer["sure"], bool)


def test_guides_the_test_engine_cannot_follow_are_errors(engine: TritonEngine) -> None:
    base = {"text_input": "Hi", "max_tokens": 4}
    with pytest.raises(InferenceServerException, match="cannot guide by 'ebnf_grammar'"):
        _call(engine, "ensemble", _batched(**base, guided_decoding_guide_type="ebnf_grammar",
                                           guided_decoding_guide='root ::= "a"'))  # fmt: skip
    with pytest.raises(InferenceServerException, match="cannot guide by the schema"):
        _call(engine, "ensemble", _batched(**base, guided_decoding_guide_type="json_schema",
                                           guided_decoding_guide='{"oneOf": []}'))  # fmt: skip
