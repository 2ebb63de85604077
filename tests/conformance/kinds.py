"""The backend kinds the conformance suite runs on, each a factory and nothing more.

A kind names the session fixture of its engine (serving the tiny Qwen3, the shape of the
team's chat model), builds its backend settings on it, and declares the differences measured on
it (`tests/conformance/test_backends.py` asserts each of them, so a declaration that stops being
true fails). Every kind gets the same requests and the same assertions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.registry import BackendSettings
from backends.triton.settings import StreamText, TritonSettings
from backends.trtllm_grpc.settings import TrtllmGrpcSettings
from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings
from tests.conftest import QWEN3_MODEL
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS

CONTEXT = 2048  # every test engine serves the tiny models with this context


@dataclass(frozen=True)
class Kind:
    name: str  # the test id and the backend's name in the gateway
    engine: str  # the session fixture of its engine on the tiny Qwen3
    settings: Callable[[Any, Path], BackendSettings]  # (engine, model dir) -> settings
    legacy: bool = False  # TensorRT-LLM removed it in July 2026 (backends/TENSORRT_LLM.md C)
    constrains: bool = True  # structured outputs honoured; else a 400 naming the field
    refuses_long_max_tokens: bool = False  # a 400 past the context, as vLLM; else clamped
    streams_split_characters: bool = True  # False: a character over two tokens is U+FFFD
    # How an answer is forced: the stand-ins' `[[force:TEXT]]` hook; vLLM (no hook) by a
    # choice constraint of the one text.
    forced_by_hook: bool = True


def vllm(engine: Any, model_dir: Path) -> BackendSettings:
    return VllmSettings(url=engine.url, model=QWEN3_MODEL, model_dir=model_dir)


def trtllm_serve(engine: Any, model_dir: Path) -> BackendSettings:
    return TrtllmServeSettings(url=engine.url, model_dir=model_dir)


def trtllm_grpc(engine: Any, model_dir: Path) -> BackendSettings:
    return TrtllmGrpcSettings(url=engine.address, model_dir=model_dir)


def triton(model: str) -> Callable[[Any, Path], BackendSettings]:
    def settings(engine: Any, model_dir: Path) -> BackendSettings:
        # PyTriton cannot write model-config parameters, so the test BLS lacks the real one's
        # `accumulate_tokens: true` that discovery reads; the setting says it instead.
        stream_text: StreamText = "cumulative" if model == "tensorrt_llm_bls" else "auto"
        return TritonSettings(
            url=engine.grpc_url, model=model, model_dir=model_dir, context_length=CONTEXT,
            stream_text=stream_text, add_special_tokens=ADD_SPECIAL_TOKENS[model],
        )  # fmt: skip

    return settings


KINDS = [
    Kind("vllm", "vllm_qwen3_engine", vllm, refuses_long_max_tokens=True, forced_by_hook=False),
    Kind("trtllm-serve", "trtllm_serve_qwen3_engine", trtllm_serve),
    Kind("trtllm-grpc", "trtllm_grpc_qwen3_engine", trtllm_grpc, refuses_long_max_tokens=True),
    Kind("triton-llmapi", "triton_qwen3_engine", triton("tensorrt_llm"), constrains=False),
    Kind("triton-bls", "triton_qwen3_engine", triton("tensorrt_llm_bls"), legacy=True),
    Kind("triton-ensemble", "triton_qwen3_engine", triton("ensemble"), legacy=True,
         streams_split_characters=False),
]  # fmt: skip
