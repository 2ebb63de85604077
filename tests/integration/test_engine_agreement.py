"""Greedy agreement between real vLLM and each TensorRT-LLM interface on a real Triton server,
on the trained tiny model, over every exchange of the tagger's dev split, through the gateway.

The model was trained to answer these exchanges with confident codes, so engines that read the
same prompt must give the same code, whatever their kernels: a disagreement here is a prompt
that differs (template, special tokens) or a decoding that does. `ensemble` and
`tensorrt_llm_bls` answer through the `tagger` alias, constrained to the codes as vLLM is; the
LLM-API model has no guided decoding, so it and vLLM get the alias's prompt without the
constraint, and the model's own greedy answer is compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.registry import BackendSettings
from backends.triton.settings import TritonSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from gateway.tasks.task import DEBUG_HEADER, Task, load_tasks
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS, TritonEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import ThreadedServer

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
PUBLIC = "phi-3-mini"
AT_LEAST = 0.98


@pytest.fixture(scope="module")
def tagger() -> Task:
    return load_tasks(PROMPTS)["tagger"]


@pytest.fixture(scope="module")
def dev() -> list[list[dict[str, str]]]:
    lines = (PROMPTS / "tagger" / "dataset.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [row for row in map(json.loads, lines) if row["split"] == "dev"]
    return [
        [{"role": "user", "content": row["child"]}, {"role": "assistant", "content": row["pika"]}]
        for row in rows
    ]


@pytest.fixture(scope="module")
def gateways(
    vllm_engine: VllmEngine, triton_engine: TritonEngine, tiny_model_dir: Path
) -> Iterator[dict[str, str]]:
    """A gateway per engine, each serving the alias on its engine alone: name -> base URL."""
    backends: dict[str, BackendSettings] = {"vllm": VllmSettings(url=vllm_engine.url)}
    for model in ("ensemble", "tensorrt_llm_bls", "tensorrt_llm"):
        backends[model] = TritonSettings(
            url=triton_engine.grpc_url, model=model, model_dir=tiny_model_dir,
            context_length=2048, add_special_tokens=ADD_SPECIAL_TOKENS[model],
        )  # fmt: skip
    with ExitStack() as stack:
        urls = {}
        for name, backend in backends.items():
            settings = Settings(
                backends={name: backend}, primary=name, models=[PUBLIC], tasks_enabled=True,
                tasks_dir=PROMPTS,
            )  # fmt: skip
            urls[name] = stack.enter_context(ThreadedServer(create_app(settings))).url
        yield urls


def codes(url: str, bodies: list[dict[str, Any]], headers: dict[str, str]) -> list[str]:
    """Each body's answer, the engine's own text (the alias's `raw` with the debug header)."""
    with httpx.Client(base_url=url, timeout=120) as client:

        def one(body: dict[str, Any]) -> str:
            response = client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
            completion = response.json()
            completion = completion.get("raw", completion)
            return str(completion["choices"][0]["message"]["content"])

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, bodies))


def agreement(first: list[str], second: list[str]) -> float:
    return sum(a == b for a, b in zip(first, second, strict=True)) / len(first)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_the_alias_gives_vllms_codes_on_every_triton_interface_with_guided_decoding(
    model: str, gateways: dict[str, str], dev: list[list[dict[str, str]]], tagger: Task,
    run_summary: list[str],
) -> None:  # fmt: skip
    bodies = [{"model": "tagger", "messages": exchange} for exchange in dev]
    vllm = codes(gateways["vllm"], bodies, {DEBUG_HEADER: "raw"})
    triton = codes(gateways[model], bodies, {DEBUG_HEADER: "raw"})
    assert set(vllm) <= set(tagger.codes)
    assert set(triton) <= set(tagger.codes)
    share = agreement(vllm, triton)
    run_summary.append(f"tagger dev, greedy through the alias: vLLM vs {model} {share:.1%}")
    assert share >= AT_LEAST


def test_the_llm_api_model_gives_vllms_greedy_answer_without_a_constraint(
    gateways: dict[str, str], dev: list[list[dict[str, str]]], tagger: Task,
    run_summary: list[str],
) -> None:  # fmt: skip
    """The alias's prompt without `structured_outputs`: the trained model's own first token."""
    bodies = []
    for exchange in dev:
        body = tagger.build({"messages": exchange}, model=PUBLIC)
        del body["structured_outputs"]
        bodies.append(body)
    vllm, triton = codes(gateways["vllm"], bodies, {}), codes(gateways["tensorrt_llm"], bodies, {})
    assert sum(answer in tagger.codes for answer in vllm) >= AT_LEAST * len(dev)
    share = agreement(vllm, triton)
    run_summary.append(f"tagger dev, greedy, no constraint: vLLM vs tensorrt_llm {share:.1%}")
    assert share >= AT_LEAST
