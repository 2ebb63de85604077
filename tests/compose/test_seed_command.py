"""The seed's first vLLM command works behind the gateway unchanged, as the runbook shows.

The seed runs::

    python -m vllm.entrypoints.openai.api_server --model ./merged_qwen3_finetuned \
        --host 0.0.0.0 --port 8000 --tensor-parallel-size 1 --gpu-memory-utilization 0.8 \
        --max-model-len 2048 --trust-remote-code

The test runs exactly that command, with what a CPU machine and the tests' rules require:
--host 127.0.0.1 rather than 0.0.0.0 (tests stay on loopback) and a free --port; --model is
the same relative path, a link to the tests' tiny model in the server's working directory, so
vLLM serves it under the name `./merged_qwen3_finetuned`, as the seed's server does. The
gateway gets only the engine's address and discovers that name from /v1/models.
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
from pathlib import Path

import httpx
import openai
import pytest

from tests.compose.stack import COMPOSE
from tests.compose.test_monitoring import VLLM_METRICS
from tests.engines.vllm_engine import VllmEngine, free_port

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


SEED_MODEL = "./merged_qwen3_finetuned"


class SeedEngine(VllmEngine):
    """vLLM started with the seed's own flags (see the module docstring)."""

    def command(self) -> list[str]:
        args = SEED.split()[1:]  # drop "python": this interpreter runs it
        args[args.index("0.0.0.0")] = "127.0.0.1"
        args[args.index("8000")] = str(self.port)
        return [sys.executable, *args]


@pytest.fixture(scope="module")
def seed_engine(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmEngine]:
    home = tmp_path_factory.mktemp("seed")
    (home / SEED_MODEL).symlink_to(tiny_model_dir, target_is_directory=True)
    engine = SeedEngine(home / SEED_MODEL, cwd=home, log_path=home / "vllm.log")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def gateway(seed_engine: VllmEngine) -> Iterator[str]:
    """`gateway serve` configured with the runbook's value, pointed at the session's vLLM."""
    backends = runbook_backends()
    backends["vllm"]["url"] = seed_engine.url
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


def test_the_seed_engine_runs_the_seed_command(seed_engine: VllmEngine) -> None:
    assert (
        seed_engine.command()[1:]
        == SEED.replace("0.0.0.0", "127.0.0.1").replace("8000", str(seed_engine.port)).split()[1:]
    )


def test_the_gateway_discovers_the_served_name_and_serves_it(
    gateway: str, seed_engine: VllmEngine
) -> None:
    served = httpx.get(seed_engine.url + "/v1/models").json()["data"][0]["id"]
    assert served == SEED_MODEL
    assert [m["id"] for m in httpx.get(gateway + "/v1/models").json()["data"]] == [served]
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.with_raw_response.create(
        model=served, messages=[{"role": "user", "content": "xin chào"}],
        max_tokens=4, temperature=0,
    )  # fmt: skip
    assert response.headers["x-gateway-backend"] == "vllm"
    assert response.parse().choices[0].message.content is not None


def test_the_dashboards_vllm_metrics_exist_in_vllm(gateway: str, seed_engine: VllmEngine) -> None:
    text = httpx.get(seed_engine.url + "/metrics").text  # after the request above
    names = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()}
    assert names >= VLLM_METRICS, VLLM_METRICS - names
