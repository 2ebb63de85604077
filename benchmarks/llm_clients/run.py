"""A standard LLM benchmark client (guidellm) on real vLLM, directly and through the gateway.

Usage: ``python benchmarks/llm_clients/run.py [--quick] [--rounds R] [--requests N]
[--engine-url URL] [--guidellm PATH] [--json OUT]``

Starts vLLM's OpenAI server (CPU build) on the tests' tiny model unless ``--engine-url`` names a
running one, and one gateway process in front of it. guidellm (``pip install guidellm`` into a
separate venv: it pins numpy 2 and a newer torch than the gateway's test engines) streams chat
completions one at a time (its ``synchronous`` profile); rounds alternate the order of the two
targets (ABBA) so drift on a shared machine hits both alike. The gateway's own view, the mean of
its ``gateway_overhead_seconds`` histogram over the gateway rounds, is reported next to it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.overhead

from summary import METRICS, added_median, describe, pooled, render

from benchmarks.overhead.procs import metric, start_gateway
from tests.engines.tagger_model import build_tagger_model
from tests.engines.vllm_engine import VllmEngine

ROOT = Path(__file__).resolve().parents[2]
SERVED = "tiny-phi3"
BENCH_VENV_GUIDELLM = ROOT / ".venv-bench" / "bin" / "guidellm"
PROMPT_TOKENS, OUTPUT_TOKENS = 128, 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (CI smoke)")
    parser.add_argument("--rounds", type=int, help="ABBA rounds (default 4; quick 1)")
    parser.add_argument("--requests", type=int, help="requests per target per round")
    parser.add_argument("--engine-url", help="a running vLLM server serving the tiny model")
    parser.add_argument("--guidellm", type=Path, help="the guidellm executable")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args()
    guidellm = args.guidellm or find_guidellm()
    if guidellm is None:
        parser.error(f"guidellm not found: python3 -m venv .venv-bench && "
                     f"{BENCH_VENV_GUIDELLM.parent}/pip install guidellm")  # fmt: skip
    rounds = args.rounds or (1 if args.quick else 4)
    requests = args.requests or (4 if args.quick else 100)
    with tempfile.TemporaryDirectory(prefix="llm-clients-") as name, ExitStack() as stack:
        tmp = Path(name)
        engine = args.engine_url or start_engine(stack, tmp)
        gateway = start_gateway(stack, tmp, all_cores(), settings(engine, tmp), "gateway")
        targets = {"direct to vLLM": engine, "through the gateway": gateway.url}
        reports, overhead = measure(guidellm, targets, rounds, requests, tmp)
    result = summarise(reports, overhead)
    print(render(result["targets"], result["added"]))
    print(f"\ngateway's own overhead histogram, mean: {overhead:.3f} ms per request")
    if args.json:
        result["command"] = " ".join(["python", *sys.argv])
        result["plan"] = {"rounds": rounds, "requests": requests, "prompt_tokens": PROMPT_TOKENS,
                          "output_tokens": OUTPUT_TOKENS, "profile": "synchronous"}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = sum(row["failed"] for row in result["targets"].values())
    return 1 if failed else 0


def measure(
    guidellm: Path, targets: dict[str, str], rounds: int, requests: int, tmp: Path
) -> tuple[dict[str, list[dict[str, Any]]], float]:
    """ABBA rounds of guidellm per target; the gateway's mean overhead (ms) meanwhile."""
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    names = list(targets)
    seconds, count = 0.0, 0.0
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            out = tmp / f"round{round_}-{len(reports[name])}-{name.split()[-1]}.json"
            gateway_round = name != names[0]
            before = _overhead(targets[name]) if gateway_round else (0.0, 0.0)
            run_guidellm(guidellm, targets[name], requests, out)
            if gateway_round:
                after = _overhead(targets[name])
                seconds, count = seconds + after[0] - before[0], count + after[1] - before[1]
            reports[name].append(json.loads(out.read_text()))
            for failure in failures(reports[name][-1]):
                print(f"WARNING: {name}, round {round_}: {failure}", file=sys.stderr)
    return reports, 1000.0 * seconds / max(count, 1.0)


def failures(report: dict[str, Any], most: int = 3) -> list[str]:
    """What guidellm recorded for the first failed requests of a report, shortened."""
    found = []
    for benchmark in report.get("benchmarks", []):
        requests = benchmark.get("requests") or {}
        for kind in ("errored", "incomplete"):
            for request in (requests.get(kind) or [])[:most]:
                info = request.get("info") or {}
                detail = request.get("error") or info.get("error") or json.dumps(request)[:300]
                found.append(f"{kind}: {str(detail)[:300]}")
    return found[:most]


def run_guidellm(guidellm: Path, target: str, requests: int, out: Path) -> None:
    """One synchronous guidellm benchmark of ``requests`` streamed chat completions."""
    model_dir, output = ROOT / ".cache" / "tiny-phi3", OUTPUT_TOKENS
    command = [
        str(guidellm), "run",
        "--backend", f"kind=openai_http,target={target},model={SERVED},http2=false",
        "--profile", "kind=synchronous",
        "--constraint", f"kind=max_requests,count={requests}",
        "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={output}",
        "--tokenizer", f"kind=huggingface_auto,model={model_dir}",
        "--output", f"kind=json,path={out}",
        "--disable-console",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"guidellm failed ({done.returncode}):\n{done.stderr[-3000:]}")


def summarise(reports: dict[str, list[dict[str, Any]]], overhead_ms: float) -> dict[str, Any]:
    """Pooled percentiles per target and the gateway's added medians with their intervals."""
    direct_name, gateway_name = list(reports)
    pools = {name: pooled(found) for name, found in reports.items()}
    rows = {
        name: {"requests": len(values["ttft_ms"]), "failed": failed, **describe(values)}
        for name, (values, failed) in pools.items()
    }
    through, direct = pools[gateway_name][0], pools[direct_name][0]
    added = {name: added_median(through[name], direct[name]) for name in METRICS}
    return {"targets": rows, "added": added, "gateway_overhead_histogram_mean_ms": overhead_ms}


def start_engine(stack: ExitStack, tmp: Path) -> str:
    """vLLM's OpenAI server on the tiny model (built once into .cache), stopped on exit."""
    model_dir = build_tagger_model(ROOT / ".cache" / "tiny-phi3")
    engine = VllmEngine(model_dir, served_name=SERVED, log_path=tmp / "vllm.log", compiled=True)
    stack.enter_context(engine)
    return engine.url


def settings(engine: str, tmp: Path) -> dict[str, str]:
    backends = {"vllm": {"kind": "vllm", "url": engine, "model": SERVED}}
    return {
        "GATEWAY_BACKENDS": json.dumps(backends),
        "GATEWAY_PRIMARY": "vllm",
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp / 'records' / 'pairs.db'}",
    }


def find_guidellm() -> Path | None:
    found = shutil.which("guidellm")
    if found:
        return Path(found)
    return BENCH_VENV_GUIDELLM if BENCH_VENV_GUIDELLM.exists() else None


def all_cores() -> str:
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))


def _overhead(url: str) -> tuple[float, float]:
    """The gateway's overhead histogram (sum in seconds, count) as it stands."""
    return metric(url, "gateway_overhead_seconds_sum"), metric(
        url, "gateway_overhead_seconds_count"
    )


if __name__ == "__main__":
    sys.exit(main())
