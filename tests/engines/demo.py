"""`gateway demo`: the local stack on this machine, end to end, with real parts only.

The tests' tiny model, trained here to answer the tagger, served by real vLLM (CPU build) as
the primary and by a real Triton server with TensorRT-LLM's BLS interface on the same weights
as the shadow candidate; the gateway as its own process in front. A few exchanges go through
the `tagger` alias with the official `openai` SDK, a batch of them is mirrored to the
candidate, and the shadow report gives its verdict. Then the same again with a deliberately
broken candidate, the same engine behind the wrong chat template, and the verdict it earns.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.engines import demo_traffic
from tests.engines.tagger_model import build_tagger_model
from tests.engines.triton_engine import TritonEngine
from tests.engines.vllm_engine import VllmEngine, free_port

CACHE = Path(os.environ.get("GATEWAY_DEMO_CACHE", ".cache")).resolve()
SERVED_NAME = "tiny-phi3"
PUBLIC_NAME = "phi-3-mini"
# The gate the demo applies: the default rule on fewer pairs, latency shown but not judged.
GATE = ["--min-pairs", "100", "--min-noise-pairs", "20", "--max-p95-ratio", "off"]
NOT_JUDGED = (
    "latency is shown, not judged (--max-p95-ratio off): the TensorRT-LLM test engine is "
    "Python on this CPU, not TensorRT-LLM on a GPU, so its times say nothing of the real one"
)


def run_demo(port: int, keep_running: bool = False) -> int:
    print("demo: building the tiny model trained for the tagger (a few minutes the first time)")
    model_dir = build_tagger_model(CACHE / "tiny-phi3")
    vllm = VllmEngine(model_dir, SERVED_NAME, log_path=CACHE / "demo-vllm.log")
    print(f"demo: starting vLLM on {vllm.url}, then Triton (about a minute)")
    # Triton is made (its ports chosen) only once vLLM is up: chosen before vLLM's minute of
    # start-up, one of them was once taken meanwhile ("Address already in use").
    with vllm, TritonEngine(model_dir, log_path=CACHE / "demo-triton.log") as triton:
        print(f"demo: Triton on {triton.grpc_url}")
        same = _candidate(triton.grpc_url, model_dir=str(model_dir), add_special_tokens=False)
        print("\ndemo: 1. the candidate is TensorRT-LLM's BLS interface on the same weights")
        good = _stage("same", vllm.url, same, port, examples=True, keep_running=keep_running)
        # The engine unchanged, but the gateway renders its prompts with ChatML instead of the
        # model's own Phi-3 template, a mistake the report is there to catch.
        wrong = _candidate(triton.grpc_url, chat_template="chatml")
        print("\ndemo: 2. a broken candidate: the same engine, prompts in the wrong chat template")
        bad = _stage("broken", vllm.url, wrong, port, examples=False, keep_running=False)
    print(f"\ndemo: same weights: {_closing(good)}")
    print(f"demo: wrong chat template: {_closing(bad)}")
    if good.get("passed") is True and bad.get("passed") is False:
        return 0
    print("demo: not the verdicts this stack should give: see the reports above")
    return 1


def _candidate(url: str, **settings: Any) -> dict[str, Any]:
    return {"kind": "triton", "url": url, "model": "tensorrt_llm_bls", "context_length": 2048,
            "stream_text": "cumulative", **settings}  # fmt: skip


def _stage(
    name: str,
    vllm_url: str,
    candidate: dict[str, Any],
    port: int,
    *,
    examples: bool,
    keep_running: bool,
) -> dict[str, Any]:
    """One gateway with this candidate in shadow, its traffic, then its report; the verdict."""
    records = CACHE / f"demo-{name}.db"
    for leftover in CACHE.glob(f"demo-{name}.db*"):
        leftover.unlink()
    env = _environment(vllm_url, candidate, records)
    with _gateway(env, port) as url:
        print(f"demo: gateway on {url}: primary vLLM, shadow Triton, task alias 'tagger'")
        if examples:
            demo_traffic.show_exchanges(url)
        demo_traffic.mirror(url)
        if keep_running:
            print(f"demo: serving; try  curl {url}/v1/models   (Ctrl-C goes on to the report)")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    html = CACHE / f"demo-report-{name}.html"
    print(f"demo: gateway stopped (its shadow records are drained); {NOT_JUDGED}. The report:\n")
    _report(env, "--format", "text")
    _report(env, "--format", "html", "--output", str(html))
    print(f"demo: the HTML report is {html}")
    verdict: dict[str, Any] = json.loads(_report(env, "--format", "json", quiet=True))["verdict"]
    return verdict


def _report(env: dict[str, str], *args: str, quiet: bool = False) -> str:
    command = [sys.executable, "-m", "gateway", "report", *GATE, *args]
    done = subprocess.run(command, env=env, capture_output=quiet, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"gateway report failed ({done.returncode}): {done.stderr}")
    return done.stdout or ""


def _closing(verdict: dict[str, Any]) -> str:
    """The verdict and the checks that decided it: every failed one, or what was judged."""
    reasons: list[str] = verdict.get("reasons", [])
    word = "PASS" if verdict.get("passed") else "FAIL"
    deciding = [line for line in reasons if line.startswith(word)]
    if word == "PASS":
        deciding = [line for line in deciding if "agreement" in line or "errors" in line]
    shown = "; ".join(line.removeprefix(f"{word} ") for line in deciding)
    return f"cutover verdict {word}: {shown}"


def _environment(vllm_url: str, candidate: dict[str, Any], records: Path) -> dict[str, str]:
    backends = {"vllm": {"kind": "vllm", "url": vllm_url}, "trt": candidate}
    return {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps(backends),
        "GATEWAY_PRIMARY": "vllm",
        "GATEWAY_MODELS": json.dumps([PUBLIC_NAME]),
        "GATEWAY_TASKS_ENABLED": "true",
        "GATEWAY_TASKS_DIR": str(Path(__file__).resolve().parents[2] / "prompts"),
        "GATEWAY_SHADOW": "trt",
        "GATEWAY_SHADOW_RATE": "1.0",
        "GATEWAY_SHADOW_QUEUE": str(demo_traffic.REQUESTS),  # the demo sends in a burst
        "GATEWAY_NOISE_RATE": "0.3",
        "GATEWAY_RECORDS_URL": f"sqlite:///{records}",
        # The dataset's exchanges are written for it, not children's: keep them readable.
        "GATEWAY_RECORDS_TEXT": "full",
    }


@contextlib.contextmanager
def _gateway(env: dict[str, str], port: int) -> Iterator[str]:
    port = port or free_port()  # 0: one free now, not minutes ago before the engines started
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        demo_traffic.wait_ready(url, process)
        yield url
    finally:
        process.terminate()  # SIGTERM: the gateway drains its shadow records, then exits
        process.wait(timeout=120)
