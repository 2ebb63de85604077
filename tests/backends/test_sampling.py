"""backends.sampling: what an engine samples with, resolved as vLLM resolves it."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from backends.sampling import DEFAULTED, OPENAI_DEFAULTS, Sampling, model_defaults, resolve

QWEN3 = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": 2}


def vllm_defaults() -> dict[str, Any]:
    """`ChatCompletionRequest._DEFAULT_SAMPLING_PARAMS` of the installed vLLM, read from its
    source (importing vLLM costs seconds and warnings)."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None
    assert spec.origin is not None
    source = Path(spec.origin).parent / "entrypoints/openai/chat_completion/protocol.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.AnnAssign)
            and ast.unparse(node.target) == "_DEFAULT_SAMPLING_PARAMS"
        ):
            assert node.value is not None
            value: dict[str, Any] = ast.literal_eval(node.value)
            return value
    raise AssertionError("vLLM's defaults were not found")


def test_the_fallbacks_are_vllms_own() -> None:
    """The installed vLLM's OpenAI defaults, read from its source, not copied by hand."""
    assert dict(OPENAI_DEFAULTS) == vllm_defaults()
    assert set(DEFAULTED) == set(vllm_defaults())


def test_a_models_defaults_are_the_fields_its_file_sets(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps(QWEN3))
    assert model_defaults(tmp_path) == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    assert model_defaults(tmp_path / "generation_config.json") == model_defaults(tmp_path)
    assert model_defaults(tmp_path / "missing") == {}
    assert model_defaults(None) == {}


def test_the_request_wins_then_the_model_then_the_engine() -> None:
    defaults = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    plain = resolve({}, defaults, OPENAI_DEFAULTS)
    assert (plain.temperature, plain.top_p, plain.top_k, plain.min_p) == (0.6, 0.95, 20, 0.0)
    asked = resolve({"temperature": 0, "top_k": None, "seed": 7}, defaults, OPENAI_DEFAULTS)
    assert (asked.temperature, asked.top_k, asked.seed) == (0, 20, 7)
    assert asked.greedy
    neutral = resolve({"top_k": -1}, {}, OPENAI_DEFAULTS)
    assert (neutral.temperature, neutral.top_k) == (1.0, 0)  # -1 is off, as 0


def test_max_tokens_from_either_name() -> None:
    assert resolve({"max_completion_tokens": 9}, {}, OPENAI_DEFAULTS).max_tokens == 9
    assert resolve({"max_tokens": 5}, {}, OPENAI_DEFAULTS).max_tokens == 5
    assert resolve({}, {}, OPENAI_DEFAULTS).max_tokens is None


def test_differences_name_each_field_and_ignore_float_noise() -> None:
    vllm = resolve({}, {"temperature": 0.6, "top_p": 0.95, "top_k": 20}, OPENAI_DEFAULTS)
    trt = resolve({}, {}, OPENAI_DEFAULTS)
    assert vllm.differences(trt) == [
        "temperature: 0.6 vs 1.0",
        "top_p: 0.95 vs 1.0",
        "top_k: 20 vs 0",
    ]
    as_float32 = resolve({"top_p": 0.949999988079071}, {"temperature": 0.6}, OPENAI_DEFAULTS)
    assert (
        resolve({"top_p": 0.95}, {"temperature": 0.6}, OPENAI_DEFAULTS).differences(as_float32)
        == []
    )


def test_greedy_legs_differ_only_where_greedy_still_listens() -> None:
    first = resolve({"temperature": 0, "top_p": 0.5, "seed": 1}, {}, OPENAI_DEFAULTS)
    second = resolve({"temperature": 0, "seed": 2}, {}, OPENAI_DEFAULTS)
    assert first.differences(second) == []
    penalised = resolve({"temperature": 0, "repetition_penalty": 1.2}, {}, OPENAI_DEFAULTS)
    assert first.differences(penalised) == ["repetition_penalty: 1.0 vs 1.2"]


@pytest.mark.parametrize("sampling", [resolve({"seed": 3, "max_tokens": 4}, {}, OPENAI_DEFAULTS)])
def test_a_sampling_survives_its_dict(sampling: Sampling) -> None:
    assert Sampling.from_dict(json.loads(json.dumps(sampling.as_dict()))) == sampling
