"""A stand-in for ``trtllm-serve MODEL`` (TensorRT-LLM's OpenAI server, PyTorch backend) on CPU.

No GPU here, so TensorRT-LLM cannot run. This module serves the tests' tiny model through a
real HTTP server that answers as trtllm-serve does per section A of ``backends/TENSORRT_LLM.md``
(upstream NVIDIA/TensorRT-LLM, ``tensorrt_llm/serve/openai_protocol.py@0076e939``,
``postprocess_handlers.py@01bf1923``, ``openai_server.py`` by index id 54820179511), generating
with ``tiny_llm.TinyLlm`` on the same weights as the vLLM and Triton engines. The request and
response models are in ``trtllm_serve_protocol``, the checks run on requests in
``trtllm_serve_requests``, generation in ``trtllm_serve_generation``, the routes and answer
shapes in ``trtllm_serve_server``.

``TrtllmServeEngine`` runs this module's ``main`` as a subprocess on a free port, whose command
line mirrors the upstream flags it stands in for. Errors: a server that dies or never answers
``/health`` raises ``RuntimeError`` with the tail of its log.

Example::

    with TrtllmServeEngine(build_tiny_model(Path("/tmp/tiny-phi3"))) as engine:
        client = openai.OpenAI(base_url=engine.url + "/v1", api_key="x")
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tests.engines.started import Started
from tests.engines.vllm_engine import free_port

MAX_SEQ_LEN = 2048  # the same context the vLLM and Triton engines serve the tiny model with
_LOG_TAIL_LINES = 60
_STOP_GRACE_SECONDS = 20.0
_REPO = Path(__file__).resolve().parents[2]


class TrtllmServeEngine(Started):
    """Runs this module's ``main`` in a subprocess on a free port; ``url`` has no ``/v1``.

    ``guided_decoding`` configures the xgrammar backend (without it, trtllm-serve drops
    ``response_format`` silently); ``generation_config`` is ``--generation-config``;
    ``served_name`` replaces the model dir's basename as the model id.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        guided_decoding: bool = False,
        generation_config: Literal["trtllm", "auto"] = "trtllm",
        served_name: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.guided_decoding = guided_decoding
        self.generation_config = generation_config
        self.served_name = served_name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or _temp_log_path()
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The exact command line the engine runs."""
        command = [
            sys.executable, "-m", "tests.engines.trtllm_serve_engine", str(self.model_dir),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--max_seq_len", str(MAX_SEQ_LEN),
            "--generation-config", self.generation_config,
        ]  # fmt: skip
        if self.guided_decoding:
            command += ["--guided-decoding-backend", "xgrammar"]
        if self.served_name is not None:
            command += ["--served_model_name", self.served_name]
        return command

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and block until ``/health`` answers 200 (the model is loaded)."""
        if self._process is not None:
            raise RuntimeError("TrtllmServeEngine already started")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with self.log_path.open("ab") as log:
            # Its own session, so stop() reaches anything it starts.
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=_REPO,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process.poll() is not None:
                self._fail(f"trtllm-serve stand-in exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"trtllm-serve stand-in not healthy after {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL its whole group after 20 s. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2.0) as response:  # noqa: S310
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def _fail(self, reason: str) -> None:
        self.stop()
        raise RuntimeError(f"{reason}; log {self.log_path}, last lines:\n{self.log_tail()}")


def _temp_log_path() -> Path:
    handle, path = tempfile.mkstemp(prefix="trtllm-serve-", suffix=".log")
    os.close(handle)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> None:
    """``trtllm-serve MODEL [flags]``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="a local model directory")
    parser.add_argument("--host", default="localhost")  # trtllm-serve's defaults
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max_seq_len", type=int, default=MAX_SEQ_LEN)
    parser.add_argument("--max_num_tokens", type=int, default=8192)
    # trtllm-serve's --served_model_name (the id the smg server reports is the same
    # `served_model_name or model`, facts B); facts A.6 only state the basename rule.
    parser.add_argument("--served_model_name", default=None)
    # facts A.2 (docs/source/features/sampling.md): trtllm-serve ... --generation-config auto
    parser.add_argument("--generation-config", choices=("trtllm", "auto"), default="trtllm")
    # Upstream sets this in the YAML config (`guided_decoding_backend: xgrammar`, facts A.3);
    # the flag stands in for that key. Without it, response_format is silently dropped.
    parser.add_argument("--guided-decoding-backend", choices=("xgrammar",), default=None)
    args = parser.parse_args(argv)

    # Heavy imports here, so importing this module for TrtllmServeEngine stays cheap.
    import uvicorn

    from tests.engines.trtllm_serve_generation import ServeOptions
    from tests.engines.trtllm_serve_server import build_app

    options = ServeOptions(
        model_dir=args.model,
        served_name=args.served_model_name,
        guided_decoding_backend=args.guided_decoding_backend,
        generation_config=args.generation_config,
        max_seq_len=args.max_seq_len,
        max_num_tokens=args.max_num_tokens,
    )
    # openai_server: uvicorn with log_level "info" and a 5 s keep-alive
    uvicorn.run(
        build_app(options),
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
