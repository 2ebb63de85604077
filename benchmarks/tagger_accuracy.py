"""The trained tiny model's tagger accuracy through the gateway, with `gateway eval`.

Starts real vLLM (CPU) and the Triton test server (TensorRT-LLM's BLS interface) on the tests'
tiny model trained for the tagger (`tests/engines/tagger_model.py`, built into .cache once), a
gateway in front of each serving the `tagger` alias, then runs `gateway eval` on a split with
both as targets: accuracy, macro-F1, confusion matrices, agreement between the two. Writes the
text, JSON and HTML reports into the output folder and prints the text one::

    python benchmarks/tagger_accuracy.py --split test --output .cache/tagger-eval
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test engines live in tests/engines

from backends.registry import BackendSettings  # noqa: E402
from backends.triton.settings import TritonSettings  # noqa: E402
from backends.vllm import VllmSettings  # noqa: E402
from gateway import cli  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from tests.engines.tagger_model import build_tagger_model  # noqa: E402
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS, TritonEngine  # noqa: E402
from tests.engines.vllm_engine import VllmEngine  # noqa: E402
from tests.support.servers import ThreadedServer  # noqa: E402

PROMPTS = ROOT / "prompts"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("test", "dev", "all"), default="test")
    parser.add_argument("--output", type=Path, default=ROOT / ".cache" / "tagger-eval")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    model_dir = build_tagger_model(ROOT / ".cache" / "tiny-phi3")
    with ExitStack() as stack:
        vllm = stack.enter_context(
            VllmEngine(model_dir, "tiny-phi3", log_path=args.output / "vllm.log", compiled=True)
        )
        triton = stack.enter_context(TritonEngine(model_dir, log_path=args.output / "triton.log"))
        backends: dict[str, BackendSettings] = {
            "vllm": VllmSettings(url=vllm.url),
            "trt": TritonSettings(
                url=triton.grpc_url, model="tensorrt_llm_bls", model_dir=model_dir,
                context_length=2048, add_special_tokens=ADD_SPECIAL_TOKENS["tensorrt_llm_bls"],
            ),
        }  # fmt: skip
        targets = []
        for name, backend in backends.items():
            settings = Settings(
                backends={name: backend}, primary=name, models=["phi-3-mini"],
                tasks_enabled=True, tasks_dir=PROMPTS,
            )  # fmt: skip
            server = stack.enter_context(ThreadedServer(create_app(settings)))
            targets += ["--target", f"{name}={server.url}/v1"]
        common = ["eval", "--dataset", str(PROMPTS / "tagger" / "dataset.jsonl"),
                  "--split", args.split, "--tasks-dir", str(PROMPTS), *targets,
                  "--concurrency", "4"]  # fmt: skip
        for fmt in ("json", "html", "text"):
            output = args.output / f"tagger-{args.split}.{fmt}"
            status = cli.main([*common, "--format", fmt, "--output", str(output)])
            if status != 0:
                return status
    print((args.output / f"tagger-{args.split}.text").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
