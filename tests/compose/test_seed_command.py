"""The seed's first vLLM command works behind the gateway unchanged, as the runbook shows.

The seed runs::

    python -m vllm.entrypoints.openai.api_server --model ./merged_qwen3_finetuned \
        --host 0.0.0.0 --port 8000 --tensor-parallel-size 1 --gpu-memory-utilization 0.8 \
        --max-model-len 2048 --trust-remote-code

The session's vLLM (`vllm_engine` in tests/conftest.py, shared with the other suites) is the
same server module with the flags that apply on a CPU: --model (a local directory), --port,
--max-model-len 2048; it binds 127.0.0.1 rather than 0.0.0.0 (tests stay on loopback).
--tensor-parallel-size 1 is vLLM's default; --gpu-memory-utilization sizes GPU memory (the CPU
build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE); --trust-remote-code matters only for
models with their own code, which neither model has. The fixture also sets --served-model-name,
which the seed does not: either way the gateway reads the served name from /v1/models, and that
discovery is what makes the seed's command work unchanged.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.devstack.vllm_engine import VllmEngine, free_port
from tests.compose.stack import COMPOSE
from tests.compose.test_monitoring import VLLM_METRICS

RUNBOOK = (COMPOSE / "README.md").read_text(encoding="utf-8")
SEED = (
    "python -m vllm.entrypoints.openai.api_server --model ./merged_qwen3_finetuned "
    "--host 0.0.0.0 --port 8000 --tensor-parallel-size 1 --gpu-memory-utilization 0.8 "
    "--max-model-len 2048 --trust-remote-code"
)


def runbook_backends() -> dict[str, dict[str, str]]:
    """The GATEWAY_BACKENDS value the runbook gives for the seed's server."""
    section = RUNBOOK.split("<!-- seed -->")[1]
    match = re.search(r"GATEWAY_BACKENDS='([^']+)'", section)
    assert match is not None
    backends: dict[str, dict[str, str]] = json.loads(match.group(1))
    return backends


def test_the_runbook_shows_the_seed_command_and_nothing_more_for_it() -> None:
    section = " ".join(RUNBOOK.split("<!-- seed -->")[1].split())
    assert SEED in section.replace("\\ ", "")
    assert runbook_backends() == {"vllm": {"kind": "vllm", "url": "http://127.0.0.1:8000"}}


@pytest.fixture(scope="module")
def gateway(vllm_engine: VllmEngine) -> Iterator[str]:
    """`gateway serve` configured with the runbook's value, pointed at the session's vLLM."""
    backends = runbook_backends()
    backends["vllm"]["url"] = vllm_engine.url
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "GATEWAY_BACKENDS": json.dumps(backends)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_the_gateway_discovers_the_served_name_and_serves_it(
    gateway: str, vllm_engine: VllmEngine
) -> None:
    served = httpx.get(vllm_engine.url + "/v1/models").json()["data"][0]["id"]
    assert [m["id"] for m in httpx.get(gateway + "/v1/models").json()["data"]] == [served]
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.with_raw_response.create(
        model=served, messages=[{"role": "user", "content": "xin chào"}],
        max_tokens=4, temperature=0,
    )  # fmt: skip
    assert response.headers["x-gateway-backend"] == "vllm"
    assert response.parse().choices[0].message.content is not None


def test_the_dashboards_vllm_metrics_exist_in_vllm(gateway: str, vllm_engine: VllmEngine) -> None:
    text = httpx.get(vllm_engine.url + "/metrics").text  # after the request above
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()}
    assert names >= VLLM_METRICS, VLLM_METRICS - names
