"""`gateway demo`: the local stack on this machine, end to end, with real parts only.

A tiny model built here, served by real vLLM (CPU build) as the primary and by a real Triton
server with TensorRT-LLM's BLS interface as the shadow candidate; the gateway as its own
process in front; a first chat completion through it with the official `openai` SDK; a batch
of traffic mirrored to the candidate; then the shadow report and its cutover verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.engines.tiny_model import build_tiny_model
from tests.engines.triton_engine import TritonEngine
from tests.engines.vllm_engine import VllmEngine

CACHE = Path(os.environ.get("GATEWAY_DEMO_CACHE", ".cache")).resolve()
SERVED_NAME = "tiny-phi3"
PUBLIC_NAME = "phi-3-mini"
REQUESTS = 120


def run_demo(port: int, keep_running: bool = False) -> int:
    print("demo: building the tiny model (random weights, real tokenizer and chat template)")
    model_dir = build_tiny_model(CACHE / "tiny-phi3")
    vllm = VllmEngine(model_dir, SERVED_NAME, log_path=CACHE / "demo-vllm.log")
    triton = TritonEngine(model_dir, log_path=CACHE / "demo-triton.log")
    records = CACHE / "demo-shadow.db"
    for leftover in CACHE.glob("demo-shadow.db*"):
        leftover.unlink()
    env = _environment(vllm.url, triton.grpc_url, model_dir, records)
    print(f"demo: starting vLLM on {vllm.url} and Triton on {triton.grpc_url} (about a minute)")
    with vllm, triton:
        with _gateway(env, port) as url:
            print(f"demo: gateway on {url}: primary vLLM, shadow TensorRT-LLM (Triton BLS)")
            _first_request(url)
            _traffic(url)
            if keep_running:
                print(f"demo: serving; try  curl {url}/v1/models   (Ctrl-C stops)")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
        print("demo: gateway stopped (its shadow records are drained); the report:\n")
        report = subprocess.run(
            [sys.executable, "-m", "gateway", "report", "--format", "text",
             "--min-pairs", "50", "--min-noise-pairs", "5"],
            env=env, check=False,
        )  # fmt: skip
    verdict = {0: "PASS", 1: "FAIL"}.get(report.returncode, "error")
    print(f"\ndemo: cutover verdict {verdict} (random weights: the engines rarely agree)")
    return 0 if report.returncode in (0, 1) else report.returncode


def _environment(vllm_url: str, triton_url: str, model_dir: Path, records: Path) -> dict[str, str]:
    backends = {
        "vllm": {"kind": "vllm", "url": vllm_url},
        "trt": {
            "kind": "triton", "url": triton_url, "model": "tensorrt_llm_bls",
            "tokenizer_dir": str(model_dir), "context_length": 2048,
            "stream_text": "cumulative", "add_special_tokens": False,
        },
    }  # fmt: skip
    return {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps(backends),
        "GATEWAY_PRIMARY": "vllm",
        "GATEWAY_MODELS": json.dumps([PUBLIC_NAME]),
        "GATEWAY_SHADOW": "trt",
        "GATEWAY_SHADOW_RATE": "1.0",
        "GATEWAY_NOISE_RATE": "0.2",
        "GATEWAY_RECORDS_URL": f"sqlite:///{records}",
        "GATEWAY_RECORDS_TEXT": "full",  # the demo's text is synthetic; the default is hashes
    }


@contextlib.contextmanager
def _gateway(env: dict[str, str], port: int) -> Iterator[str]:
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()  # SIGTERM: the gateway drains its shadow records, then exits
        process.wait(timeout=60)


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {process.returncode}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url + "/ready", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


def _first_request(url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="demo")
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC_NAME,
        messages=[
            {"role": "system", "content": "Bạn là Pika, gia sư của các bạn nhỏ."},
            {"role": "user", "content": "Pika ơi, 5 + 7 bằng 12 đúng không?"},
        ],
        temperature=0,
        max_tokens=16,
    )
    answer = raw.parse()
    print("demo: first request through the gateway")
    print(f"  x-request-id          {raw.headers['x-request-id']}")
    print(f"  x-gateway-backend     {raw.headers['x-gateway-backend']}")
    print(f"  x-gateway-overhead-ms {raw.headers['x-gateway-overhead-ms']}")
    print(f"  finish_reason         {answer.choices[0].finish_reason}")
    print(f"  usage                 {answer.usage}")
    print(f"  content (random weights, so gibberish): {answer.choices[0].message.content!r}")


def _traffic(url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="demo")

    def one(index: int) -> None:
        answer = client.chat.completions.create(
            model=PUBLIC_NAME,
            messages=[{"role": "user", "content": f"Pika ơi, {index} + {index % 9} bằng mấy?"}],
            temperature=0,
            max_tokens=8,
            stream=index % 4 == 0,
        )
        if index % 4 == 0:
            list(answer)  # read the stream to its end

    print(f"demo: sending {REQUESTS} requests, each mirrored to the shadow backend")
    with ThreadPoolExecutor(4) as pool:
        for done, _ in enumerate(pool.map(one, range(REQUESTS)), start=1):
            if done % 40 == 0:
                print(f"  {done}/{REQUESTS}")
