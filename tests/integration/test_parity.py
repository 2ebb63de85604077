"""Proof that both legs ran the same request, on real engines: the team's Qwen3 chat model on
real vLLM (which applies its generation_config.json: temperature 0.6, top_p 0.95, top_k 20)
shadowed to the TensorRT-LLM stand-ins on the same weights.

A chat request that sets no temperature must run with vLLM's defaults on both legs, read the
same prompt ids on both, and say so in the pair; a candidate left on its engine's own defaults
is flagged with the fields that differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.registry import BackendSettings
from backends.sampling import OPENAI_DEFAULTS, model_defaults, resolve
from backends.trtllm_grpc.settings import TrtllmGrpcSettings
from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from gateway.shadow import compare as c
from gateway.shadow.evidence import prompt_digest
from gateway.shadow.pairs import PairRecord
from tests.conftest import QWEN3_MODEL
from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine
from tests.engines.trtllm_serve_engine import TrtllmServeEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer

CHAT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Bạn là Pika, gia sư của các bạn nhỏ."},
    {"role": "user", "content": "Pika ơi, 5 + 7 bằng mấy?"},
]


def shadowed(
    primary: BackendSettings,
    candidate: BackendSettings,
    store: Path,
    requests: int = 3,
    stream: bool = False,
    **extra: Any,
) -> list[PairRecord]:
    """`requests` chats without temperature through a gateway shadowing every one."""
    settings = Settings(
        backends={"vllm": primary, "cand": candidate}, primary="vllm", models=[QWEN3_MODEL],
        shadow="cand", shadow_rate=1.0, noise_rate=0.0, records_url=f"sqlite:///{store}",
        records_text="full", **extra,
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for _ in range(requests):
            if stream:
                chunks = list(client.chat.completions.create(
                    model=QWEN3_MODEL, messages=CHAT, max_tokens=8, stream=True,
                    stream_options={"include_usage": True},
                ))  # fmt: skip
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                for chunk in chunks:  # the ids were taken out of every event
                    assert (chunk.model_extra or {}).get("prompt_token_ids") is None
                    assert all((c.model_extra or {}).get("token_ids") is None
                               for c in chunk.choices)  # fmt: skip
                continue
            answer = client.chat.completions.create(model=QWEN3_MODEL, messages=CHAT, max_tokens=8)
            assert answer.choices[0].message.content is not None
            # The gateway asked vLLM for the ids and took them out of the client's answer.
            assert (answer.model_extra or {}).get("prompt_token_ids") is None
            assert (answer.choices[0].model_extra or {}).get("token_ids") is None
    return stored_pairs(store)


def vllm(engine: VllmEngine, model_dir: Path) -> VllmSettings:
    return VllmSettings(url=engine.url, model=QWEN3_MODEL, model_dir=model_dir)


@pytest.mark.parametrize(
    ("kind", "stream", "reader"),
    [("trtllm-serve", False, "inline"), ("trtllm-grpc", False, "inline"),
     # Streamed, the candidate's answer read in the shadow reader's child process.
     ("trtllm-serve", True, "process"), ("trtllm-grpc", True, "process")],
)  # fmt: skip
def test_both_legs_run_the_same_request(
    kind: str,
    stream: bool,
    reader: str,
    vllm_qwen3_engine: VllmEngine,
    trtllm_serve_qwen3_engine: TrtllmServeEngine,
    trtllm_grpc_qwen3_engine: TrtllmGrpcEngine,
    tiny_qwen3_dir: Path,
    tmp_path: Path,
) -> None:
    candidate: BackendSettings = (
        TrtllmServeSettings(url=trtllm_serve_qwen3_engine.url, model_dir=tiny_qwen3_dir)
        if kind == "trtllm-serve"
        else TrtllmGrpcSettings(url=trtllm_grpc_qwen3_engine.address, model_dir=tiny_qwen3_dir)
    )
    primary = vllm(vllm_qwen3_engine, tiny_qwen3_dir)
    store = tmp_path / "r.db"
    found = shadowed(primary, candidate, store, stream=stream, shadow_reader=reader)
    assert len(found) == 3
    assert all(pair.params.stream == stream for pair in found)
    expected = resolve({"max_tokens": 8}, model_defaults(tiny_qwen3_dir), OPENAI_DEFAULTS)
    assert (expected.temperature, expected.top_p, expected.top_k) == (0.6, 0.95, 20)
    for pair in found:
        assert pair.primary.sampling == expected  # what vLLM applied, as its source says
        assert pair.candidate.sampling == expected  # sent to the candidate explicitly
        # vLLM reported the ids it read; the candidate was sent the gateway's tokenisation.
        assert pair.primary.prompt_digest is not None
        assert pair.primary.prompt_digest == pair.candidate.prompt_digest
        assert pair.prompt_diff is None
        assert pair.primary.output_ids is not None  # vLLM's return_token_ids, kept in full mode
        assert len(pair.primary.output_ids) == pair.primary.completion_tokens
        flags = {flag.reason for flag in c.compare(pair).flags}
        assert c.SAMPLING not in flags
        assert c.PROMPT not in flags


def test_a_candidate_on_its_engines_defaults_is_flagged(
    vllm_qwen3_engine: VllmEngine,
    trtllm_serve_qwen3_engine: TrtllmServeEngine,
    tiny_qwen3_dir: Path,
    tmp_path: Path,
) -> None:
    """generation_config `engine`: trtllm-serve samples at its own temperature 1.0."""
    candidate = TrtllmServeSettings(
        url=trtllm_serve_qwen3_engine.url, model_dir=tiny_qwen3_dir, generation_config="engine"
    )
    found = shadowed(vllm(vllm_qwen3_engine, tiny_qwen3_dir), candidate, tmp_path / "r.db", 1)
    (pair,) = found
    result = c.compare(pair)
    assert result.status == "parity"
    (flag,) = [flag for flag in result.flags if flag.reason == c.SAMPLING]
    assert flag.detail == (
        "temperature: 0.6 vs 1.0; top_p: 0.95 vs 1.0; top_k: 20 vs 0 (vllm vs cand)"
    )


def test_the_ids_vllm_reported_are_the_ones_the_gateway_renders(
    vllm_qwen3_engine: VllmEngine, tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    """The noise pair (vLLM against itself): both legs' ids are vLLM's own, and they equal
    the gateway's rendering of the same chat, `enable_thinking` included."""
    from backends.base import Route
    from backends.prompting import Prompter

    prompter = Prompter.from_dir(tiny_qwen3_dir)
    for thinking in (True, False):
        payload = {"messages": CHAT, "chat_template_kwargs": {"enable_thinking": thinking}}
        direct = openai.OpenAI(base_url=vllm_qwen3_engine.url + "/v1", api_key="x")
        answer = direct.chat.completions.create(
            model=QWEN3_MODEL, messages=CHAT, max_tokens=1,
            extra_body={"chat_template_kwargs": {"enable_thinking": thinking},
                        "return_token_ids": True},
        )  # fmt: skip
        reported = answer.model_extra["prompt_token_ids"] if answer.model_extra else None
        ours = prompter.prompt_ids(Route.CHAT, payload)
        assert reported == ours
        assert prompt_digest(reported) == prompt_digest(ours)
