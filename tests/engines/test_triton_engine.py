"""Tests for the Triton engine: a real Triton server with TensorRT-LLM's tensor interfaces.

The legacy models and what all three share; the LLM-API model's own: ``test_triton_llmapi``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy.typing as npt
import pytest
import torch
from transformers import AutoTokenizer, Phi3ForCausalLM, PreTrainedTokenizerBase
from tritonclient.utils import InferenceServerException

from tests.engines.triton_engine import TritonEngine
from tests.support.triton_calls import Reply
from tests.support.triton_calls import batched as _batched
from tests.support.triton_calls import call as _call
from tests.support.triton_calls import model_config as _config
from tests.support.triton_calls import only_text as _only_text
from tests.support.triton_calls import seed as _seed
from tests.support.triton_calls import stream as _stream
from tests.support.triton_calls import texts as _texts

VIETNAMESE = "Chúc mừng con!"
TEXT_MODELS = ("ensemble", "tensorrt_llm_bls")


@pytest.fixture(scope="module")
def engine(triton_engine: TritonEngine) -> TritonEngine:
    return triton_engine


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


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


def test_concurrent_streams_match_sequential_answers(engine: TritonEngine) -> None:
    prompts = ("The weather in Da Nang", "Phở bò là món ăn")

    def inputs(prompt: str) -> dict[str, npt.NDArray[Any]]:
        return _batched(text_input=prompt, max_tokens=25, stream=True)

    async def both() -> list[list[Reply]]:
        calls = (_stream(engine.grpc_url, "ensemble", inputs(p), ("text_output",)) for p in prompts)
        return [replies for replies, _ in await asyncio.gather(*calls)]

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
