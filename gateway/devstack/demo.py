"""`gateway demo`: the local stack on this machine, end to end, with real parts only.

A tiny model built here, served by real vLLM (CPU build), the gateway as its own process in
front, and a first chat completion through it with the official `openai` SDK.
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
from pathlib import Path

from gateway.devstack.tiny_model import build_tiny_model
from gateway.devstack.vllm_engine import VllmEngine

CACHE = Path(os.environ.get("GATEWAY_DEMO_CACHE", ".cache"))
SERVED_NAME = "tiny-phi3"


def run_demo(port: int, keep_running: bool = False) -> int:
    print("demo: building the tiny model (random weights, real tokenizer and chat template)")
    model_dir = build_tiny_model(CACHE / "tiny-phi3")
    engine = VllmEngine(model_dir, SERVED_NAME, log_path=CACHE / "demo-vllm.log")
    print(f"demo: starting vLLM on {engine.url} (about a minute on 2 cores)")
    with engine, _gateway(engine.url, port) as gateway_url:
        print(f"demo: gateway on {gateway_url}, primary backend vllm -> {engine.url}")
        _first_request(gateway_url)
        if keep_running:
            print(f"demo: serving; try  curl {gateway_url}/v1/models   (Ctrl-C stops)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0


@contextlib.contextmanager
def _gateway(engine_url: str, port: int) -> Iterator[str]:
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps({"vllm": {"kind": "vllm", "url": engine_url}}),
        "GATEWAY_PRIMARY": "vllm",
    }
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


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
        model=SERVED_NAME,
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
