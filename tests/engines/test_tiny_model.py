"""Tests for the tiny Phi-3 model builder: files, reuse, determinism, HF loading, tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BatchEncoding, Phi3ForCausalLM, PreTrainedTokenizerBase

from tests.engines.tiny_model import build_tiny_model

VIETNAMESE = "Nguyễn Thị Định ở Quảng Ngãi hỏi: “Bạn đã ăn phở chưa?” — ỷ, ỹ, ẵ 🇻🇳"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_dir)


def _json(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_build_writes_a_phi3_directory(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    config = _json(model_dir / "config.json")
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert config["hidden_size"] == 128
    assert config["num_attention_heads"] == 2  # head_dim 64: vLLM's CPU attention rejects 16
    assert config["num_hidden_layers"] == 2
    assert config["max_position_embeddings"] == 4096
    assert config["dtype"] == "bfloat16"
    assert config["vocab_size"] == len(tokenizer)
    assert 1000 <= len(tokenizer) <= 2000
    assert (model_dir / "model.safetensors").is_file()


def test_generation_config_stops_on_end_of_text_and_end_of_turn(
    model_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    eos_ids = _json(model_dir / "generation_config.json")["eos_token_id"]
    to_id = tokenizer.convert_tokens_to_ids
    assert isinstance(eos_ids, list)
    assert to_id("<|endoftext|>") in eos_ids
    assert to_id("<|end|>") in eos_ids


def test_special_tokens_are_phi3s(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    tok = tokenizer
    assert (tok.bos_token, tok.eos_token) == ("<s>", "<|endoftext|>")
    assert tok.pad_token is not None
    for token in ("<s>", "</s>", "<unk>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"):
        ids = tok.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
    assert "chat_template" in _json(model_dir / "tokenizer_config.json")


def test_reuses_a_complete_build(model_dir: Path) -> None:
    weights = model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_model(model_dir) == model_dir
    assert weights.stat().st_mtime_ns == before


def test_rebuilds_a_half_built_directory_identically(model_dir: Path, tmp_path: Path) -> None:
    target = build_tiny_model(tmp_path / "model")
    (target / ".tiny-model-complete").unlink()
    (target / "model.safetensors").write_bytes(b"truncated")
    build_tiny_model(target)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (target / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_another_seed_gives_other_weights(model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "model", seed=1)
    assert (other / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (
        model_dir / "model.safetensors"
    ).read_bytes()


def test_build_leaves_the_callers_torch_seed_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "model")
    assert torch.equal(torch.rand(3), expected)


def _greedy(model: Phi3ForCausalLM, inputs: BatchEncoding, new_tokens: int) -> torch.Tensor:
    output = model.generate(  # type: ignore[misc]  # transformers' generate stub mistypes self
        **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
    )
    assert isinstance(output, torch.Tensor)
    return output


def test_transformers_generates_five_greedy_tokens(
    model_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = Phi3ForCausalLM.from_pretrained(model_dir)
    assert model.dtype == torch.bfloat16
    inputs = tokenizer("Xin chào, the gateway", return_tensors="pt")
    first, second = (_greedy(model, inputs, 5) for _ in range(2))
    assert first.shape == (1, inputs["input_ids"].shape[1] + 5)
    assert torch.equal(first, second)


def test_chat_template_renders_phi3_turns(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Xin chào"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|system|>\nYou are a helpful assistant.<|end|>\n"
        "<|user|>\nXin chào<|end|>\n<|assistant|>\n"
    )


def test_vietnamese_round_trips_and_splits_characters(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = tokenizer.encode(VIETNAMESE)
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == VIETNAMESE
    # Characters outside the corpus fall apart into byte tokens that are not valid UTF-8 alone.
    pieces = [tokenizer.decode([token_id]) for token_id in ids]
    assert any("\ufffd" in piece for piece in pieces)
