"""Engines that fail for real: what a client sees, stated per case.

The engines these tests start (and break) serve the untrained model: what it answers does not
matter here, only how its engine fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backends.triton.settings import TritonSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import CACHE, TINY_MODEL
from tests.engines.tiny_model import build_tiny_model
from tests.engines.triton_engine import TritonEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import ThreadedServer

PUBLIC = "phi-3-mini"


def test_triton_unavailable_at_start_then_appearing(random_model_dir: Path, tmp_path: Path) -> None:
    """Before Triton is up: /ready is 503 and requests get a 503 the SDK retries. Once it is
    up, the gateway discovers the model and serves, with no restart."""
    engine = TritonEngine(random_model_dir, log_path=tmp_path / "triton.log")  # ports chosen now
    backend = TritonSettings(
        url=engine.grpc_url, model="tensorrt_llm", model_dir=random_model_dir,
        context_length=2048, circuit_cooldown=0.5,
    )  # fmt: skip
    settings = Settings(
        backends={"trt": backend}, primary="trt", models=[PUBLIC], probe_interval=0.5,
        records_url=f"sqlite:///{tmp_path / 'pairs.db'}",
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        assert httpx.get(server.url + "/ready").status_code == 503
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(
                model=PUBLIC, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert caught.value.status_code == 503
        with engine:
            deadline = time.monotonic() + 30
            while httpx.get(server.url + "/ready").status_code != 200:
                assert time.monotonic() < deadline, "the gateway never saw Triton come up"
                time.sleep(0.2)
            time.sleep(0.6)  # past the circuit's cooldown: the next request goes through
            answer = client.chat.completions.create(
                model=PUBLIC, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                temperature=0,
            )  # fmt: skip
            assert answer.choices[0].finish_reason in ("stop", "length")


def fault_gateway(broken_url: str, spare_url: str, tmp_path: Path) -> ThreadedServer:
    settings = Settings(
        backends={
            "broken": VllmSettings(url=broken_url, model=TINY_MODEL, circuit_failures=2,
                                   circuit_cooldown=60, retries=0),
            "spare": VllmSettings(url=spare_url, model=TINY_MODEL),
        },
        primary="broken", fallback="spare", models=[PUBLIC], probe_interval=0,
        records_url=f"sqlite:///{tmp_path / 'pairs.db'}",
    )  # fmt: skip
    return ThreadedServer(create_app(settings))


def served_by_fallback(client: openai.OpenAI) -> Any:
    """Asks until the circuit is open and the fallback answers (a few requests at most)."""
    failures: list[int] = []
    for _ in range(5):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=PUBLIC, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        except openai.APIStatusError as exc:
            failures.append(exc.status_code)  # the engine's failures, before the circuit opens
            continue
        assert raw.headers["x-gateway-fallback-for"] == "broken"
        assert set(failures) <= {502, 503}
        return raw
    raise AssertionError("the circuit never opened")


def test_vllm_killed_mid_stream(
    vllm_engine: VllmEngine, random_model_dir: Path, tmp_path: Path
) -> None:
    """The client of the cut stream gets an SSE error event (the SDK raises APIError); later
    clients are served by the fallback once the dead engine's circuit opens."""
    # An answer far longer than the kill takes: vLLM's API server can lag its engine by seconds
    # on a busy machine (a first chunk 9 s late, then 550 in half a second), and a 1,500-token
    # answer was once written whole before the client read its first chunk.
    long_context = '{"max_position_embeddings": 32768}'
    victim = VllmEngine(
        random_model_dir, TINY_MODEL, log_path=tmp_path / "victim.log",
        extra_args=("--max-model-len", "32768", "--hf-overrides", long_context),
    )  # fmt: skip
    victim.start()
    try:
        with fault_gateway(victim.url, vllm_engine.url, tmp_path) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            stream = client.chat.completions.create(
                model=PUBLIC, messages=[{"role": "user", "content": "kể chuyện"}],
                max_tokens=32000, stream=True, extra_body={"ignore_eos": True},
            )  # fmt: skip
            assert stream.response.headers["x-gateway-backend"] == "broken"
            chunks = iter(stream)
            next(chunks)
            victim.kill()
            with pytest.raises(openai.APIError) as caught:
                for _ in chunks:
                    pass
            assert "backend 'broken'" in caught.value.message
            assert served_by_fallback(client).headers["x-gateway-backend"] == "spare"
            client.close()
    finally:
        victim.stop()


def test_vllm_engine_dead_behind_a_healthy_api_is_detected(
    vllm_engine: VllmEngine, tmp_path: Path
) -> None:
    """vLLM's CPU build serves a head_dim-16 model's /health and /v1/models, then its engine
    dies at the first generation and every request is a 500: the gateway answers 502, opens
    the circuit after `circuit_failures`, and the fallback serves."""
    broken_dir = build_tiny_model(CACHE / "tiny-phi3-head16", heads=8)
    broken = VllmEngine(broken_dir, TINY_MODEL, log_path=tmp_path / "broken.log")
    broken.start()
    try:
        with fault_gateway(broken.url, vllm_engine.url, tmp_path) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(
                    model=PUBLIC, messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
            assert caught.value.status_code == 502
            assert served_by_fallback(client).headers["x-gateway-backend"] == "spare"
            client.close()
    finally:
        broken.stop()
