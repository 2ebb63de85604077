"""The tiny Qwen3 model: its files, its ChatML template, TinyLlm on it, and real vLLM serving it
as the team serves its fine-tuned Qwen3 (generation_config.json's sampling defaults applied)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Qwen3ForCausalLM,
)

from tests.conftest import QWEN3_MODEL
from tests.engines.tiny_llm import Sampling, TinyLlm
from tests.engines.tiny_qwen3 import build_tiny_qwen3
from tests.engines.vllm_engine import VllmEngine

SYSTEM = {"role": "system", "content": "Bạn là Pika."}
QUESTION = {"role": "user", "content": "Xin chào"}
CLOSED_THINKING = "<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen3_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_qwen3_dir)


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    found = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(found, int), token
    return found


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], **kw: Any) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, **kw))


def test_build_writes_a_qwen3_directory(
    tiny_qwen3_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    config = _json(tiny_qwen3_dir / "config.json")
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"]) == (128, 2)
    # head_dim 64: vLLM's CPU attention rejects 16.
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 2)
    assert config["head_dim"] == 64
    assert config["tie_word_embeddings"] is True
    assert config["dtype"] == "bfloat16"
    assert config["vocab_size"] == len(tokenizer)
    assert config["eos_token_id"] == _id(tokenizer, "<|im_end|>")


def test_same_seed_rebuilds_byte_identical_files(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    rebuilt = build_tiny_qwen3(tmp_path / "model")
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (rebuilt / name).read_bytes() == (tiny_qwen3_dir / name).read_bytes(), name


def test_transformers_loads_and_generates(
    tiny_qwen3_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir)
    assert isinstance(model, Qwen3ForCausalLM)
    assert model.dtype == torch.bfloat16
    inputs = tokenizer("Xin chào, the gateway", return_tensors="pt")
    output = model.generate(  # type: ignore[misc]  # transformers' generate stub mistypes self
        **inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False
    )
    assert isinstance(output, torch.Tensor)
    assert output.shape == (1, inputs["input_ids"].shape[1] + 5)


def test_special_tokens_are_qwen3s(tokenizer: PreTrainedTokenizerBase) -> None:
    assert (tokenizer.bos_token, tokenizer.eos_token) == (None, "<|im_end|>")
    assert tokenizer.pad_token == "<|endoftext|>"
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert tokenizer.encode("Xin chào") == tokenizer.encode("Xin chào", add_special_tokens=False)
    # As in Qwen3, <think> is one token but not a special one: decoded text keeps it.
    ids = tokenizer.encode("<|im_start|>assistant\n<think>\nhmm</think>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nhmm</think>"


def test_generation_config_holds_qwen3_sampling_defaults(
    tiny_qwen3_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    config = _json(tiny_qwen3_dir / "generation_config.json")
    end_of_text, end_of_turn = _id(tokenizer, "<|endoftext|>"), _id(tokenizer, "<|im_end|>")
    assert config["do_sample"] is True
    assert (config["temperature"], config["top_p"], config["top_k"]) == (0.6, 0.95, 20)
    assert config["eos_token_id"] == [end_of_turn, end_of_text]
    assert config["bos_token_id"] == end_of_text


def test_chat_template_renders_chatml_turns(tokenizer: PreTrainedTokenizerBase) -> None:
    expected = (
        "<|im_start|>system\nBạn là Pika.<|im_end|>\n"
        "<|im_start|>user\nXin chào<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    chat = [SYSTEM, QUESTION]
    assert _render(tokenizer, chat, add_generation_prompt=True) == expected
    assert _render(tokenizer, chat, add_generation_prompt=True, enable_thinking=True) == expected
    assert _render(tokenizer, chat) == expected.removesuffix("<|im_start|>assistant\n")


def test_chat_template_closes_thinking_when_disabled(tokenizer: PreTrainedTokenizerBase) -> None:
    rendered = _render(tokenizer, [QUESTION], add_generation_prompt=True, enable_thinking=False)
    assert rendered == (
        "<|im_start|>user\nXin chào<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_chat_template_keeps_reasoning_only_after_the_last_question(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    answer = {"role": "assistant", "content": "<think>\nChào lại.\n</think>\n\nChào bạn!"}
    follow_up = {"role": "user", "content": "Khỏe không?"}
    assert _render(tokenizer, [QUESTION, answer, follow_up], add_generation_prompt=True) == (
        "<|im_start|>user\nXin chào<|im_end|>\n"
        "<|im_start|>assistant\nChào bạn!<|im_end|>\n"
        "<|im_start|>user\nKhỏe không?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert _render(tokenizer, [QUESTION, answer]) == (
        "<|im_start|>user\nXin chào<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nChào lại.\n</think>\n\nChào bạn!<|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("model_fixture", "end_of_turn"),
    [("tiny_model_dir", "<|end|>"), ("tiny_qwen3_dir", "<|im_end|>")],
)
def test_tiny_llm_force_hook_ends_the_turn_with_the_models_token(
    request: pytest.FixtureRequest, model_fixture: str, end_of_turn: str
) -> None:
    llm = TinyLlm(request.getfixturevalue(model_fixture))
    assert llm.end_of_turn_id == _id(llm.tokenizer, end_of_turn)
    prompt = "Nói đi [[force:Chúc mừng con!]]"
    sampling = Sampling(
        max_tokens=40, end_ids=frozenset({llm.end_of_turn_id}), forced=llm.forced_ids(prompt)
    )
    steps = list(llm.steps(llm.encode(prompt, special=True), sampling))
    assert steps[-1].finish == "stop"
    assert llm.decode([step.token for step in steps if step.token is not None]) == "Chúc mừng con!"


def _chat(engine: VllmEngine, **fields: Any) -> dict[str, Any]:
    body = {"model": QWEN3_MODEL, "messages": [QUESTION], "max_tokens": 16, **fields}
    response = httpx.post(engine.url + "/v1/chat/completions", json=body, timeout=60.0)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _answer_ids(answer: dict[str, Any]) -> list[int]:
    ids: list[int] = answer["choices"][0]["token_ids"]
    return ids


def test_vllm_serves_a_chat_completion(vllm_qwen3_engine: VllmEngine) -> None:
    answer = _chat(vllm_qwen3_engine, return_token_ids=True)
    assert answer["model"] == QWEN3_MODEL
    assert answer["choices"][0]["message"]["content"]
    assert len(_answer_ids(answer)) == answer["usage"]["completion_tokens"] > 0


def test_vllm_honours_enable_thinking_false(
    vllm_qwen3_engine: VllmEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    closed = tokenizer.encode(CLOSED_THINKING, add_special_tokens=False)
    default = _chat(vllm_qwen3_engine, return_token_ids=True, max_tokens=1)["prompt_token_ids"]
    no_thinking = _chat(
        vllm_qwen3_engine,
        return_token_ids=True,
        max_tokens=1,
        chat_template_kwargs={"enable_thinking": False},
    )["prompt_token_ids"]
    assert no_thinking[-len(closed) :] == closed
    assert no_thinking == [*default, *closed]
    assert default[-len(closed) :] != closed
    # vLLM renders the template exactly as transformers does.
    assert no_thinking == tokenizer.encode(
        _render(tokenizer, [QUESTION], add_generation_prompt=True, enable_thinking=False),
        add_special_tokens=False,
    )


def test_vllm_samples_with_the_generation_config_defaults(vllm_qwen3_engine: VllmEngine) -> None:
    """A seeded request without sampling fields draws exactly what the same seed draws with
    Qwen3's settings written out, and not what vLLM's own defaults (temperature 1, no top-k or
    top-p) draw: on this near-uniform model, top-k 20 changes nearly every token."""

    def ids(**fields: Any) -> list[int]:
        return _answer_ids(_chat(vllm_qwen3_engine, return_token_ids=True, **fields))

    defaults = ids(seed=7)
    assert defaults == ids(seed=7, temperature=0.6, top_p=0.95, top_k=20)
    assert defaults != ids(seed=7, temperature=1.0, top_p=1.0, top_k=0)
    assert defaults != ids(seed=8), "no temperature: sampled, so another seed draws otherwise"
    assert ids(seed=7, temperature=0) == ids(seed=8, temperature=0), "temperature 0 is greedy"
