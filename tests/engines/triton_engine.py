"""A real Triton server (PyTriton) hosting TensorRT-LLM-shaped models, for tests on CPU.

``TritonEngine`` runs this module as a subprocess, whose ``main`` binds the three models of
``triton_models`` (``ensemble``, ``tensorrt_llm_bls``, ``tensorrt_llm``) and serves them until
SIGTERM. Errors: a server that dies or never gets its models ready raises ``RuntimeError`` with
the tail of its log.

Example::

    with TritonEngine(build_tiny_model(Path("/tmp/tiny-phi3"))) as engine:
        client = tritonclient.grpc.aio.InferenceServerClient(engine.grpc_url)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.engines.started import Started

MODEL_NAMES = ("ensemble", "tensorrt_llm_bls", "tensorrt_llm")
# How each model tokenizes text_input (TensorRT-LLM preprocessing's `add_special_tokens`; the
# LLM-API model always adds them): a gateway's `triton` backend setting must say the same.
ADD_SPECIAL_TOKENS = {"ensemble": True, "tensorrt_llm_bls": False, "tensorrt_llm": True}
_LOG_TAIL_LINES = 60
_STOP_GRACE_SECONDS = 20.0


class TritonEngine(Started):
    """Runs this module's ``main`` in a subprocess on free ports; ``grpc_url`` has no scheme."""

    def __init__(self, model_dir: Path, *, log_path: Path | None = None) -> None:
        self.model_dir = model_dir
        self.grpc_port, self.http_port, self.metrics_port = _free_ports(3)
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = log_path or _temp_log_path()
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The exact command line the engine runs."""
        return [
            sys.executable, "-m", "tests.engines.triton_engine",
            "--model-dir", str(self.model_dir),
            "--grpc-port", str(self.grpc_port),
            "--http-port", str(self.http_port),
            "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and block until all three models are ready."""
        if self._process is not None:
            raise RuntimeError("TritonEngine already started")
        # The Python backend stub links libpython from the loader path; without this it finds
        # the system's 3.11 instead of this interpreter's and model load fails.
        libdir = str(sysconfig.get_config_var("LIBDIR"))
        library_path = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
        env = {**os.environ, "LD_LIBRARY_PATH": library_path, "HF_HUB_OFFLINE": "1"}
        with self.log_path.open("ab") as log:
            # Its own session, so stop() also reaches tritonserver and its backend stubs.
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None:
                self._fail(f"Triton exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"Triton models not ready after {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL its whole group after 20 s. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_SECONDS)
        # Whatever outlived a clean shutdown (a stuck stub, an orphaned tritonserver) goes now.
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

    def _ready(self) -> bool:
        from tritonclient.grpc import InferenceServerClient
        from tritonclient.utils import InferenceServerException

        client = InferenceServerClient(self.grpc_url)
        try:
            return all(client.is_model_ready(name) for name in MODEL_NAMES)
        except InferenceServerException:
            return False
        finally:
            client.close()

    def _fail(self, reason: str) -> None:
        self.stop()
        raise RuntimeError(f"{reason}; log {self.log_path}, last lines:\n{self.log_tail()}")


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that were free a moment ago, all distinct (held open together)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _temp_log_path() -> Path:
    handle, path = tempfile.mkstemp(prefix="triton-", suffix=".log")
    os.close(handle)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the three models on the given ports until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    for name in ("--grpc-port", "--http-port", "--metrics-port"):
        parser.add_argument(name, type=int, required=True)
    args = parser.parse_args(argv)

    # Heavy imports here, so importing this module for TritonEngine stays cheap.
    from pytriton.triton import Triton, TritonConfig

    from tests.engines.tiny_llm import TinyLlm
    from tests.engines.triton_models import bind_models

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    config = TritonConfig(
        grpc_address="127.0.0.1", grpc_port=args.grpc_port,
        http_address="127.0.0.1", http_port=args.http_port,
        metrics_address="127.0.0.1", metrics_port=args.metrics_port,
        exit_timeout_secs=1,  # every stop waited out 5 s (7.1 s a stop, 4.0 s with 1)
    )  # fmt: skip
    triton = Triton(config=config)
    try:
        bind_models(triton, TinyLlm(args.model_dir), ADD_SPECIAL_TOKENS)
        triton.run()
        while not stopping.wait(1.0) and triton.is_alive():
            pass
    finally:
        triton.stop()


if __name__ == "__main__":
    main()
