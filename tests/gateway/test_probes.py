"""gateway.probes against real engines: vLLM honours every check; the trtllm-serve stand-in
without a guided-decoding backend accepts a constraint and ignores it, as trtllm-serve does
(backends/TENSORRT_LLM.md, A.3); a task alias then refuses it, and so does a client's own
constraint."""

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
from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.probes import CHECKS, ProbeResult, run_probes
from gateway.report.command import read_records
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
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


def probed(settings: VllmSettings | TrtllmServeSettings) -> dict[str, ProbeResult]:
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


@pytest.fixture(scope="module")
def unguided(tiny_model_dir: Path) -> Iterator[TrtllmServeEngine]:
    with TrtllmServeEngine(tiny_model_dir, guided_decoding=False) as engine:
        yield engine


def test_a_constraint_accepted_and_ignored_is_found(unguided: TrtllmServeEngine) -> None:
    results = probed(TrtllmServeSettings(url=unguided.url))
    assert results["constraint"].outcome == "fail"
    assert "accepted a choice of ['qz7', 'xj9']" in results["constraint"].detail
    assert results["seed"].outcome == "pass"
    assert results["max_tokens"].outcome == "pass"


def test_the_gateway_shows_it_and_the_task_refuses_that_backend(
    unguided: TrtllmServeEngine, tmp_path: Path
) -> None:
    settings = Settings(
        backends={"trt": TrtllmServeSettings(url=unguided.url)},
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
