"""gateway.probes against real engines: vLLM honours every check; the trtllm-serve and
trtllm-serve --grpc stand-ins without a guided-decoding backend accept a constraint and ignore
it, as both servers do (backends/TENSORRT_LLM.md, A.3, B); a task alias then refuses that
backend, and so does a client's own constraint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from backends import registry
from backends.registry import BackendSettings
from backends.trtllm_grpc.settings import TrtllmGrpcSettings
from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.probes import CHECKS, ProbeResult, run_probes
from gateway.report.command import read_records
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine
from tests.engines.trtllm_serve_engine import TrtllmServeEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import ThreadedServer

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
EXCHANGE = [
    {"role": "user", "content": "con làm xong rồi nè"},
    {"role": "assistant", "content": "Giỏi quá!"},
]

CONSTRAINTS = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "m", "schema": {}}},
    "structured_outputs": {"choice": ["vui", "buồn"]},
}


def probed(settings: BackendSettings) -> dict[str, ProbeResult]:
    async def run() -> list[ProbeResult]:
        backend = registry.create("b", settings)
        try:
            return await run_probes(backend)
        finally:
            await backend.close()

    return {result.check: result for result in asyncio.run(run())}


def test_vllm_honours_every_check(vllm_engine: VllmEngine) -> None:
    results = probed(VllmSettings(url=vllm_engine.url, model=TINY_MODEL))
    assert list(results) == list(CHECKS)
    assert {check: r.outcome for check, r in results.items()} == dict.fromkeys(CHECKS, "pass")


@pytest.fixture(scope="module", params=["trtllm-serve", "trtllm-grpc"])
def unguided(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[BackendSettings]:
    """A TensorRT-LLM kind started without a guided-decoding backend: both servers accept a
    constraint and drop it (backends/TENSORRT_LLM.md, A.3 and B)."""
    if request.param == "trtllm-serve":
        with TrtllmServeEngine(tiny_model_dir, guided_decoding=False) as serve:
            yield TrtllmServeSettings(url=serve.url)
    else:
        with TrtllmGrpcEngine(tiny_model_dir, guided_decoding=False) as grpc:
            yield TrtllmGrpcSettings(url=grpc.address, model_dir=tiny_model_dir)


def test_a_constraint_accepted_and_ignored_is_found(unguided: BackendSettings) -> None:
    results = probed(unguided)
    assert results["constraint"].outcome == "fail"
    assert "accepted a choice of ['qz7', 'xj9']" in results["constraint"].detail
    assert results["seed"].outcome == "pass"
    assert results["max_tokens"].outcome == "pass"


def test_the_gateway_shows_it_and_the_task_refuses_that_backend(
    unguided: BackendSettings, tmp_path: Path
) -> None:
    settings = Settings(
        backends={"trt": unguided},
        primary="trt",
        models=["phi-3-mini"],
        tasks_enabled=True,
        tasks_dir=PROMPTS,
        probe_conformance_interval=300,
        records_url=f"sqlite:///{tmp_path / 'records.db'}",
        admin_token=SecretStr("a-token-of-sixteen-characters"),
    )
    with ThreadedServer(create_app(settings)) as server:
        ready = until_probed(server.url)
        assert ready["backends"]["trt"]["conformance"]["constraint"]["outcome"] == "fail"
        metrics = httpx.get(server.url + "/metrics").text
        assert 'gateway_conformance{backend="trt",check="constraint",outcome="fail"} 1.0' in metrics
        body = {"model": "tagger", "messages": EXCHANGE}
        refused = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "constraint_ignored"
        # A client's own constraint gets a 400 instead of an answer computed without it.
        for field, value in CONSTRAINTS.items():
            asked = {"model": "phi-3-mini", "messages": EXCHANGE, "max_tokens": 4, field: value}
            dropped = httpx.post(server.url + "/v1/chat/completions", json=asked, timeout=30)
            assert dropped.status_code == 400, field
            assert dropped.json()["error"]["code"] == "constraint_ignored"
            assert dropped.json()["error"]["param"] == field
        plain = {"model": "phi-3-mini", "messages": EXCHANGE, "max_tokens": 4}
        assert httpx.post(server.url + "/v1/chat/completions", json=plain, timeout=30).is_success
        headers = {"authorization": "Bearer a-token-of-sixteen-characters"}
        report = httpx.get(server.url + "/admin/report?format=text", headers=headers).text
    assert "FAIL    trt constraint: accepted a choice" in report
    _, probes = asyncio.run(read_records(settings.records_url, None))
    assert {(p.backend, p.check) for p in probes} == {("trt", check) for check in CHECKS}


def until_probed(url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(url + "/ready", timeout=10).json()
        if len(ready["backends"]["trt"]["conformance"]) == len(CHECKS):
            found: dict[str, Any] = ready
            return found
        time.sleep(0.5)
    raise AssertionError("the conformance probes did not finish")
