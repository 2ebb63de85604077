"""The LLM-API test model ``tensorrt_llm`` on a real Triton server, against
``backends/TENSORRT_LLM.md`` section C (its interface) and D (the LLM API's defaults)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from tritonclient.utils import InferenceServerException

from tests.engines.hooks import fails_after
from tests.engines.triton_engine import TritonEngine
from tests.engines.triton_llmapi import LLMAPI_INPUTS
from tests.support.triton_calls import Inputs, Reply, array, call, model_config, stream, texts

MODEL = "tensorrt_llm"
REASONS = ("finish_reason", "stop_reason", "cumulative_logprob")
ALL_OUTPUTS = ("text_output", *REASONS)
DTYPES = {tensor.name: tensor.dtype for tensor in LLMAPI_INPUTS}
LONG = "Một hai ba bốn năm sáu bảy tám chín mười, mười một, mười hai, mười ba, mười bốn, mười lăm."
# config.pbtxt (section C): name -> (data_type, dims); all but text_input optional.
UPSTREAM_INPUTS = {
    "text_input": ("TYPE_STRING", ["-1"]),
    "streaming": ("TYPE_BOOL", ["1"]),
    "sampling_param_best_of": ("TYPE_INT32", ["1"]),
    "sampling_param_temperature": ("TYPE_FP32", ["1"]),
    "sampling_param_top_k": ("TYPE_INT32", ["1"]),
    "sampling_param_top_p": ("TYPE_FP32", ["1"]),
    "sampling_param_frequency_penalty": ("TYPE_FP32", ["1"]),
    "sampling_param_presence_penalty": ("TYPE_FP32", ["1"]),
    "sampling_param_max_tokens": ("TYPE_INT32", ["1"]),
    "sampling_param_stop": ("TYPE_STRING", ["-1"]),
    "sampling_param_seed": ("TYPE_UINT64", ["1"]),
    "sampling_param_exclude_input_from_output": ("TYPE_BOOL", ["1"]),
    "sampling_param_return_perf_metrics": ("TYPE_BOOL", ["1"]),
    "return_finish_reason": ("TYPE_BOOL", ["1"]),
    "return_stop_reason": ("TYPE_BOOL", ["1"]),
    "return_cumulative_logprob": ("TYPE_BOOL", ["1"]),
}


@pytest.fixture(scope="module")
def engine(triton_engine: TritonEngine) -> TritonEngine:
    return triton_engine


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def inputs(**values: Any) -> Inputs:
    """The LLM-API model's inputs, no batch dim, each of its config's type."""
    return {name: array(value, batched=False, dtype=DTYPES[name]) for name, value in values.items()}


def ask(engine: TritonEngine, outputs: tuple[str, ...] = ALL_OUTPUTS, **values: Any) -> list[Reply]:
    return call(engine, MODEL, inputs(**values), outputs)


def answer(engine: TritonEngine, **values: Any) -> dict[str, Any]:
    """The one reply to a non-streamed request that leaves the prompt out."""
    (reply,) = ask(engine, sampling_param_exclude_input_from_output=True, **values)
    return reply.outputs


def test_the_config_has_upstreams_inputs_and_outputs(engine: TritonEngine) -> None:
    config = model_config(engine, MODEL)
    assert int(config.get("max_batch_size", 0)) == 0
    assert config["model_transaction_policy"]["decoupled"] is True
    found = {tensor["name"]: tensor for tensor in config["input"]}
    assert {name: (t["data_type"], t["dims"]) for name, t in found.items()} == UPSTREAM_INPUTS
    required = {name for name, tensor in found.items() if not tensor.get("optional")}
    assert required == {"text_input"}
    # No token counts, no repetition_penalty, min_p, end_id or guided decoding.
    assert {tensor["name"] for tensor in config["output"]} == set(ALL_OUTPUTS)


def test_omitted_sampling_inputs_decode_greedily(engine: TritonEngine) -> None:
    base = {"text_input": "Hello", "sampling_param_max_tokens": 16}
    greedy = answer(engine, **base)["text_output"]
    for explicit in ({"sampling_param_top_k": 1}, {"sampling_param_temperature": 0.0},
                     {"sampling_param_top_p": 0.0}):  # fmt: skip
        assert answer(engine, **base, **explicit)["text_output"] == greedy, explicit
    sampled = {
        answer(engine, **base, sampling_param_temperature=1.5, sampling_param_seed=seed)[
            "text_output"
        ]
        for seed in range(3)
    }
    assert greedy not in sampled  # temperature alone samples: the others default to 1 and 0
    assert len(sampled) > 1


def test_a_seed_repeats_a_sample(engine: TritonEngine) -> None:
    def sample(seed: int) -> str:
        values = {"sampling_param_temperature": 1.2, "sampling_param_top_k": 40}
        reply = answer(engine, text_input="Hello", sampling_param_seed=seed, **values)
        return str(reply["text_output"])

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_max_tokens_defaults_to_32(
    engine: TritonEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    ids = tokenizer.encode(LONG, add_special_tokens=False)
    assert len(ids) > 40
    prompt = f"[[force:{LONG}]]"
    default = answer(engine, text_input=prompt, return_finish_reason=True)
    assert default == {"text_output": tokenizer.decode(ids[:32]), "finish_reason": "length",
                       "stop_reason": None, "cumulative_logprob": None}  # fmt: skip
    short = answer(engine, text_input=prompt, sampling_param_max_tokens=5)
    assert short["text_output"] == tokenizer.decode(ids[:5])


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_penalties_change_a_repetitive_answer(engine: TritonEngine, penalty: str) -> None:
    base = {"text_input": "Hello", "sampling_param_max_tokens": 24}
    plain = answer(engine, **base)["text_output"]
    assert answer(engine, **base, **{f"sampling_param_{penalty}": 0.0})["text_output"] == plain
    # The trained model answers a bare "Hello" with one code letter over and over, by a wide
    # margin: a penalty of 1.5 once per token seen does not move it, 3 does.
    assert answer(engine, **base, **{f"sampling_param_{penalty}": 3.0})["text_output"] != plain


def test_stop_strings_match_as_tokens_and_leave_the_answer(engine: TritonEngine) -> None:
    prompt = "[[force:Xin chào bạn ơi]]"
    flags = {"return_finish_reason": True, "return_stop_reason": True}
    stopped = answer(engine, text_input=prompt, sampling_param_stop=[" chào"], **flags)
    assert stopped == {"text_output": "Xin", "finish_reason": "stop", "stop_reason": " chào",
                       "cumulative_logprob": None}  # fmt: skip
    # "chào" alone tokenizes unlike " chào" after a word, so it never matches.
    alone = answer(engine, text_input=prompt, sampling_param_stop=["chào"], **flags)
    assert alone["text_output"] == "Xin chào bạn ơi"
    assert (alone["finish_reason"], alone["stop_reason"]) == ("stop", "None")  # its <|end|>
    replies = ask(engine, text_input=prompt, streaming=True, sampling_param_stop=[" chào"])
    assert texts(replies) == ["Xin", "Xin"]
    cut_short = answer(engine, text_input=prompt, sampling_param_max_tokens=2, **flags)
    assert (cut_short["finish_reason"], cut_short["stop_reason"]) == ("length", "None")


@pytest.mark.parametrize("name", REASONS)
def test_each_optional_output_comes_only_when_asked(engine: TritonEngine, name: str) -> None:
    prompt = "[[force:Xin chào]]"
    unasked = answer(engine, text_input=prompt)
    assert unasked == {"text_output": "Xin chào", **dict.fromkeys(REASONS)}
    asked = answer(engine, text_input=prompt, **{f"return_{name}": True})
    # As strings; no log probs without a logprobs input, so str(None) (section C).
    value = {"finish_reason": "stop", "stop_reason": "None", "cumulative_logprob": "None"}[name]
    assert asked == {"text_output": "Xin chào", **dict.fromkeys(REASONS), name: value}


def test_a_non_streamed_answer_holds_the_prompt_unless_excluded(
    engine: TritonEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Prompt and answer ids decoded together (section C), so the prompt's special tokens go."""
    prompt = "<|user|>\n[[force:Xin chào]]<|end|>\n<|assistant|>\n"
    (echoed,) = ask(engine, text_input=prompt)
    ids = [*tokenizer.encode(prompt), *tokenizer.encode("Xin chào", add_special_tokens=False)]
    assert echoed.outputs["text_output"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert echoed.outputs["text_output"] == "\n[[force:Xin chào]]\n\nXin chào"
    assert answer(engine, text_input=prompt)["text_output"] == "Xin chào"
    streamed = ask(engine, text_input=prompt, streaming=True)
    assert texts(streamed) == ["Xin", "Xin chào", "Xin chào"]


def test_streaming_sends_the_text_so_far_at_each_step(
    engine: TritonEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    vietnamese = "Chúc mừng con!"
    replies = ask(engine, text_input=f"[[force:{vietnamese}]]", streaming=True,
                  return_finish_reason=True)  # fmt: skip
    ids = tokenizer.encode(vietnamese, add_special_tokens=False)
    prefixes = [tokenizer.decode(ids[:n]) for n in range(1, len(ids) + 1)]
    assert texts(replies) == [*prefixes, vietnamese]  # the last step is the end token's
    reasons = [reply.outputs["finish_reason"] for reply in replies]
    assert reasons == ["None"] * len(ids) + ["stop"]  # str(None) until finished


def test_only_the_first_prompt_is_read(engine: TritonEngine) -> None:
    both = answer(engine, text_input=["[[force:Một]]", "[[force:Hai]]"])
    assert both["text_output"] == "Một"


def test_best_of_is_checked_as_the_llm_api_does(engine: TritonEngine) -> None:
    with pytest.raises(InferenceServerException, match=r"best_of \(0\) cannot be less than n"):
        ask(engine, text_input="Hi", sampling_param_best_of=0)
    # Its greedy test ignores temperature: temperature alone is "greedy" for best_of.
    sampling: list[dict[str, Any]] = [{}, {"sampling_param_temperature": 1.0}]
    for values in sampling:
        with pytest.raises(InferenceServerException, match="does not allow multiple returns"):
            ask(engine, text_input="Hi", sampling_param_best_of=2, **values)
    sampled = {"text_input": "Hello", "sampling_param_top_p": 0.9, "sampling_param_seed": 3}
    assert answer(engine, **sampled, sampling_param_best_of=2) == answer(engine, **sampled)


def test_perf_metrics_are_accepted_without_adding_outputs(engine: TritonEngine) -> None:
    reply = answer(engine, text_input="[[force:Một]]", sampling_param_return_perf_metrics=True)
    assert reply == {"text_output": "Một", **dict.fromkeys(REASONS)}


def test_every_failure_is_one_error_response(engine: TritonEngine) -> None:
    """`Error generating request: <e>`, before the first token or after some (section C)."""
    with pytest.raises(InferenceServerException) as before:
        ask(engine, text_input="[[fail:0]] hi")
    assert "Error generating request: injected fault after 0 tokens" in before.value.message()
    with pytest.raises(InferenceServerException, match="Error generating request: Prompt length"):
        ask(engine, text_input="Hi", sampling_param_max_tokens=5000)
    replies, error = asyncio.run(
        stream(engine.grpc_url, MODEL, inputs(text_input=fails_after(2), streaming=True),
               ALL_OUTPUTS)
    )  # fmt: skip
    assert len(replies) == 2
    assert error is not None
    assert "Error generating request: injected fault after 2 tokens" in error.message()
    with pytest.raises(InferenceServerException, match="unexpected shape"):
        call(engine, MODEL, {"text_input": array("Hi", batched=True)})  # 1-D only
