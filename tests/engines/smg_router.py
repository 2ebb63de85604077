"""SMG (Shepherd Model Gateway, `pip install smg`), the Rust router, in front of test engines.

It runs as `smg launch` in a subprocess, HTTP to OpenAI-compatible workers, round robin (its
default, cache-aware, keeps a small test's short prompts on one worker), metrics on a port of
their own. Facts used here, from `smg launch --help` of smg 1.13.0: `/readiness` answers 503
until a worker is registered (`/health` is always 200); workers are registered in the
background, after GET /health and /v1/models on each.

Example::

    with SmgRouter([engine_a.url, engine_b.url]) as router:
        client = openai.OpenAI(base_url=router.url + "/v1", api_key="x")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.engines.started import Started
from tests.engines.vllm_engine import free_port


def smg_command() -> str:
    """The `smg` console script of this environment (pip's, beside this Python)."""
    beside = Path(sys.executable).parent / "smg"
    return str(beside) if beside.exists() else (shutil.which("smg") or "smg")


class SmgRouter(Started):
    def __init__(self, workers: list[str], log_path: Path | None = None) -> None:
        self.workers = workers
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="smg-", suffix=".log")[1])
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            smg_command(), "launch", "--host", "127.0.0.1", "--port", str(self.port),
            "--worker-urls", *self.workers, "--policy", "round_robin",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(self.metrics_port),
            "--disable-tokenizer-autoload", "--worker-startup-check-interval", "1",
            "--log-json",
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"}, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"smg did not become ready; log {self.log_path}:\n{tail}")
            time.sleep(0.3)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readiness", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
