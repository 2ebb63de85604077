"""The gateway in front of an existing router: SMG routing to two real vLLM engines, as one
backend (a pool of one endpoint), with its traffic shadowed to a third engine reached directly.
The router balances; the gateway keeps its own jobs: the OpenAI contract, the circuit, the
shadow pairs and the report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import CACHE, TINY_MODEL
from tests.engines.smg_router import SmgRouter
from tests.engines.vllm_engine import VllmEngine
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer

SUCCESS = "vllm:request_success_total"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Pika ơi, 7 + 5 = ?"}]


@pytest.fixture(scope="module")
def router(vllm_replicas: list[VllmEngine]) -> Iterator[SmgRouter]:
    with SmgRouter([e.url for e in vllm_replicas[:2]], log_path=CACHE / "smg.log") as smg:
        yield smg


def test_the_gateway_serves_and_shadows_through_smg(
    vllm_replicas: list[VllmEngine], router: SmgRouter, tmp_path: Path
) -> None:
    behind, direct = vllm_replicas[:2], vllm_replicas[2]
    records = f"sqlite:///{tmp_path / 'pairs.db'}"
    settings = Settings(
        backends={
            # SMG's /health answers 200 with no worker; /readiness says whether one is ready.
            "smg": VllmSettings(url=router.url, model=TINY_MODEL, health_path="/readiness"),
            "direct": VllmSettings(url=direct.url, model=TINY_MODEL),
        },
        primary="smg", shadow="direct", shadow_rate=1.0, noise_rate=0.0, models=[TINY_MODEL],
        records_url=records, probe_interval=0.5,
    )  # fmt: skip
    before = [engine.metric(SUCCESS) for engine in behind]
    with ThreadedServer(create_app(settings)) as gateway:
        ready = httpx.get(gateway.url + "/ready").json()["backends"]["smg"]
        assert ready["ready"]
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
        for n in range(8):
            answer = client.chat.completions.create(
                model=TINY_MODEL, messages=ASK, max_tokens=6, temperature=0, seed=n
            )
            assert answer.model == TINY_MODEL
            assert answer.choices[0].finish_reason in ("stop", "length")
        streamed = client.chat.completions.create(
            model=TINY_MODEL, messages=ASK, max_tokens=6, temperature=0, stream=True
        )
        assert [chunk.choices[0].delta.content for chunk in streamed if chunk.choices]
        client.close()
        time.sleep(1.0)  # the last shadow calls end and their pairs are queued
    # Leaving the block stopped the gateway, which wrote every pair.
    served = [engine.metric(SUCCESS) - was for engine, was in zip(behind, before, strict=True)]
    assert sum(served) >= 9
    assert min(served) >= 3, served  # SMG spread them over both engines
    pairs = stored_pairs(records)
    assert len(pairs) == 9
    for pair in pairs:
        assert (pair.primary.backend, pair.candidate.backend) == ("smg", "direct")
        assert (pair.primary.status, pair.candidate.status) == (200, 200)
        assert pair.primary.prompt_tokens == pair.candidate.prompt_tokens
    assert sum(pair.params.stream for pair in pairs) == 1
