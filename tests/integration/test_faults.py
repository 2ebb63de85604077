"""Engines that fail for real: what a client sees, stated per case."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from backends.triton import TritonSettings
from gateway.app import create_app
from gateway.devstack.triton_engine import TritonEngine
from gateway.settings import Settings
from tests.support.servers import ThreadedServer

PUBLIC = "phi-3-mini"


def test_triton_unavailable_at_start_then_appearing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Before Triton is up: /ready is 503 and requests get a 503 the SDK retries. Once it is
    up, the gateway discovers the model and serves, with no restart."""
    engine = TritonEngine(tiny_model_dir, log_path=tmp_path / "triton.log")  # ports chosen now
    backend = TritonSettings(
        url=engine.grpc_url, model="tensorrt_llm", tokenizer_dir=tiny_model_dir,
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
