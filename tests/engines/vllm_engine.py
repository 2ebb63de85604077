"""vLLM's own OpenAI server in a subprocess, for tests and local runs on CPU.

Only the standard library talks to it, so this module adds no dependencies. Errors: a server
that dies or never becomes ready raises ``RuntimeError`` carrying the tail of its log.

Example::

    with VllmEngine(build_tiny_model(Path("/tmp/tiny-phi3"))) as engine:
        client = openai.OpenAI(base_url=engine.url + "/v1", api_key="x")
        before = engine.metric("vllm:request_success_total", {"finished_reason": "length"})
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.engines.procfs import stat_fields
from tests.engines.started import Started

_LOG_TAIL_LINES = 60
_STOP_GRACE_SECONDS = 20.0
_SAMPLE = re.compile(r"^(?P<name>[^\s{]+)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class VllmEngine(Started):
    """Runs ``vllm.entrypoints.openai.api_server`` on one model; ``url`` has no ``/v1``."""

    def __init__(
        self,
        model_dir: Path,
        served_name: str = "tiny-phi3",
        *,
        port: int = 0,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        cwd: Path | None = None,
        compiled: bool = False,
    ) -> None:
        self.model_dir = model_dir
        self.served_name = served_name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or _temp_log_path()
        self.extra_args = tuple(extra_args)
        self.cwd = cwd  # where a relative --model path is resolved
        # Not compiled, vLLM skips torch.compile (`-O0`): its warm-up cost about 10 s of each
        # start on this CPU (33.5 -> 23.0 s measured), and vLLM 0.32's compile cache fails to
        # load here ("'function' object has no attribute 'finalize_loading'"), so every start
        # paid it. The model's ops and answers are the same. Benchmarks run vLLM compiled, as
        # users do.
        self.compiled = compiled
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The exact command line the engine runs."""
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_name,
            "--max-model-len", "2048",
            "--port", str(self.port),
            "--host", "127.0.0.1",
            "--dtype", "bfloat16",
            *(() if self.compiled else ("-O0",)),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 240.0) -> None:
        """Start the server and block until ``/health`` and ``/v1/models`` both answer."""
        if self._process is not None:
            raise RuntimeError("VllmEngine already started")
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
        with self.log_path.open("ab") as log:
            # Its own session, so stop() reaches the EngineCore and worker children too.
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=self.cwd,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not (self._answers("/health") and self._answers("/v1/models")):
            if self._process.poll() is not None:
                self._fail(f"vLLM exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"vLLM not ready after {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after 20 s. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_GRACE_SECONDS)
        # The API server can exit before its engine children do: wait for the group to empty.
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)
        process.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group at once: an engine crash, for fault tests."""
        process, self._process = self._process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the ``/metrics`` samples named ``name`` whose labels include ``labels``."""
        return sum_samples(self._get("/metrics"), name, labels or {})

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, reason: str) -> None:
        self.stop()
        raise RuntimeError(f"{reason}; log {self.log_path}, last lines:\n{self.log_tail()}")

    def _get(self, path: str, timeout: float = 10.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310
            body: bytes = response.read()
            return body.decode("utf-8")

    def _answers(self, path: str) -> bool:
        try:
            self._get(path, timeout=2.0)
        except (urllib.error.URLError, OSError):
            return False
        return True


def sum_samples(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum samples of metric ``name`` in Prometheus text whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        found = dict(_LABEL.findall(match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


def _temp_log_path() -> Path:
    handle, path = tempfile.mkstemp(prefix="vllm-", suffix=".log")
    os.close(handle)
    return Path(path)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the group.

    Zombies count as dead: orphans here can wait a long time for init to reap them.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return _group_signalable(pgid)
    for process in proc.glob("[0-9]*"):
        fields = stat_fields(process.name)
        if fields is None:
            continue  # the process ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


def _group_signalable(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
