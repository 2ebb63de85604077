"""Start the benchmark's child servers (nginx upstream, uvicorn proxies) and always stop them.

Every child runs in its own session and is registered on an ``ExitStack`` as soon as it exists,
so leaving the stack (normal end, error, Ctrl-C) terminates its whole process group.
"""

import os
import re
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from types import FrameType
from typing import NoReturn

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
NGINX_ATTEMPTS = 3
# One process, the fast loop and parser; port 0 so the kernel picks, and uvicorn logs the choice.
UVICORN_FLAGS = [
    *["--host", "127.0.0.1", "--port", "0"],
    *["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "on"],
]
UVICORN_PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

Child = subprocess.Popen[bytes]


class ServerError(RuntimeError):
    """A child server did not come up; the message carries the tail of its log."""


def start_nginx(stack: ExitStack, tmpdir: Path, core: int) -> str:
    """Serve the static chat completion from nginx (1 worker) pinned to ``core``; return its URL."""
    for attempt in range(1, NGINX_ATTEMPTS + 1):
        try:
            return try_nginx(stack, tmpdir, core, free_port())
        except ServerError:
            # nginx cannot bind port 0 and report it, so a free port may be taken meanwhile.
            if attempt == NGINX_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def try_nginx(stack: ExitStack, tmpdir: Path, core: int, port: int) -> str:
    """One nginx start on ``port``; raises ServerError if it exits (e.g. the port was taken)."""
    template = string.Template((HERE / "nginx.conf.template").read_text())
    config = tmpdir / "nginx.conf"
    config.write_text(template.substitute(tmpdir=tmpdir, port=port))
    pidfile = tmpdir / "nginx.pid"
    pidfile.unlink(missing_ok=True)
    config_args = ["-p", str(tmpdir), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]
    command = [*pinned(core), "nginx", *config_args]
    log = tmpdir / "nginx.log"
    child = spawn(stack, command, log, dict(os.environ))
    # The master writes its pid file only after its listening socket is bound.
    wait_for(lambda: port if pidfile.exists() else None, child, log)
    return f"http://127.0.0.1:{port}"


def start_proxy(stack: ExitStack, module: str, upstream: str, tmpdir: Path, core: int) -> str:
    """Run ``module:create_app`` under uvicorn (uvloop, httptools) pinned to ``core``."""
    log = tmpdir / f"{module}.log"
    app = [f"{module}:create_app", "--factory", "--app-dir", str(HERE)]
    command = [*pinned(core), sys.executable, "-m", "uvicorn", *app, *UVICORN_FLAGS]
    child = spawn(stack, command, log, {**os.environ, "UPSTREAM_URL": upstream})

    def bound_port() -> int | None:
        found = UVICORN_PORT.search(log.read_text(errors="replace"))
        return int(found[1]) if found else None

    return f"http://127.0.0.1:{wait_for(bound_port, child, log)}"


def spawn(stack: ExitStack, command: list[str], log: Path, env: dict[str, str]) -> Child:
    """Start ``command`` with output to ``log`` and register its termination on ``stack``."""
    with log.open("wb") as out:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    stack.callback(stop, child)
    return child


def stop(child: Child) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it outlives the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with suppress(ProcessLookupError):  # the group is already gone
            os.killpg(child.pid, sig)
        try:
            child.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(check: Callable[[], int | None], child: Child, log: Path) -> int:
    """Poll ``check`` until it yields a port; fail fast if the child exits; bounded in time."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        port = check()
        if port is not None:
            return port
        if child.poll() is not None:
            break
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-2000:]
    raise ServerError(f"{log.stem} (pid {child.pid}) did not start; its log ends with:\n{tail}")


def pinned(core: int) -> list[str]:
    """Command prefix that runs a program on one CPU core only."""
    return ["taskset", "-c", str(core)]


def free_port() -> int:
    """Ask the kernel for a currently free port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_main(main: Callable[[], int]) -> NoReturn:
    """A benchmark's entry point: SIGTERM and Ctrl-C end it through SystemExit, so its
    ExitStacks unwind and stop every child it started."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
