"""Start the overhead benchmark's servers (SSE upstream, nginx proxy, gateway) and read /proc.

Built on ``benchmarks/upstream_client/servers.py``: each child runs in its own session and is
registered on an ``ExitStack`` as soon as it exists, so leaving the stack (normal end, error,
Ctrl-C) stops its whole process group, workers included.
"""

import http.client
import json
import os
import re
import string
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.upstream_client.interference import tree_ticks
from benchmarks.upstream_client.servers import (
    ServerError,
    free_port,
    pinned,
    spawn,
    start_nginx,
    wait_for,
)
from tests.engines.procfs import TCP_LISTEN, stat_fields, tcp_sockets
from tests.engines.procfs import cpu_ticks as own_ticks
from tests.engines.vllm_engine import sum_samples

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]  # the repository holding this benchmark
LISTENING = re.compile(r"listening on (\d+)")
MODEL = "phi-3-mini-4k-instruct"  # what post.lua and sse_client.py send
SHADOW_IN_FLIGHT = 64  # the shadow points' concurrency
# The shadow reader's CPU priority, gateway.shadow.reader.NICE (not imported: the harness may
# measure another commit's gateway), for a plain reader standing in for it.
READER_NICE = 10
BURST_CAPACITY = 4096  # issue 23: backends' max_concurrency and max_queue, so none is refused
ATTEMPTS = 3  # nginx cannot bind port 0 and report it: a free port may be taken meanwhile
# Load generator and upstreams share the first allowed core; the gateway gets the second.
_ALLOWED = sorted(os.sched_getaffinity(0))
LOAD_CORE, GATEWAY_CORE = _ALLOWED[0], _ALLOWED[min(1, len(_ALLOWED) - 1)]


@dataclass(frozen=True)
class Server:
    """A started child: its base URL (no /v1) and the pid of its main process."""

    url: str
    pid: int


def start_sse_upstream(
    stack: ExitStack,
    tmpdir: Path,
    core: int,
    delay_ms: float,
    tick_ms: float = 0.0,
    phase: float = 0.0,
) -> Server:
    """The paced SSE upstream (``sse_upstream.py``) pinned to ``core``; with ``tick_ms``, its
    streams run in engine steps (``ticks.py``), ``phase`` of a step after the grid's."""
    ticks = ["--tick-ms", str(tick_ms), "--tick-phase", str(phase)] if tick_ms else []
    return start_script(stack, tmpdir, core, "sse_upstream.py", "--delay-ms", str(delay_ms), *ticks)


def start_floor_proxy(
    stack: ExitStack, tmpdir: Path, core: int, upstream: str, busy_poll_us: int = 0
) -> Server:
    """``floor_proxy.py`` (the least a Python proxy can do) pinned to ``core``; polling for
    ``busy_poll_us`` after each write, as the gateway's ``GATEWAY_BUSY_POLL_US`` does."""
    poll = ["--busy-poll-us", str(busy_poll_us)] if busy_poll_us else []
    return start_script(stack, tmpdir, core, "floor_proxy.py", upstream, *poll)


def start_script(stack: ExitStack, tmpdir: Path, core: int, script: str, *args: str) -> Server:
    """One of this folder's server scripts, pinned to ``core``; it binds port 0 and prints
    ``listening on PORT`` (no free-port race, unlike nginx)."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    log = tmpdir / f"{Path(script).stem}.log"
    command = [*pinned(core), sys.executable, str(HERE / script), *args]
    child = spawn(stack, command, log, dict(os.environ))

    def bound_port() -> int | None:
        found = LISTENING.search(log.read_text(errors="replace"))
        return int(found[1]) if found else None

    return Server(f"http://127.0.0.1:{wait_for(bound_port, child, log)}", child.pid)


def start_nginx_proxy(stack: ExitStack, tmpdir: Path, core: int, upstream: str) -> Server:
    """nginx (1 worker) as a keep-alive reverse proxy to ``upstream``, pinned to ``core``."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _try_nginx_proxy(stack, tmpdir, core, upstream, free_port())
        except ServerError:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _try_nginx_proxy(stack: ExitStack, tmpdir: Path, core: int, upstream: str, port: int) -> Server:
    tmpdir.mkdir(parents=True, exist_ok=True)
    template = string.Template((HERE / "nginx_proxy.conf.template").read_text())
    config = tmpdir / "nginx.conf"
    upstream_port = upstream.rsplit(":", 1)[1]
    config.write_text(template.substitute(tmpdir=tmpdir, port=port, upstream_port=upstream_port))
    pidfile = tmpdir / "nginx.pid"
    pidfile.unlink(missing_ok=True)
    args = ["-p", str(tmpdir), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]
    log = tmpdir / "nginx.log"
    child = spawn(stack, [*pinned(core), "nginx", *args], log, dict(os.environ))
    wait_for(lambda: port if pidfile.exists() else None, child, log)
    return Server(f"http://127.0.0.1:{port}", child.pid)


def start_gateway(
    stack: ExitStack, tmpdir: Path, cores: str, settings: dict[str, str], name: str
) -> Server:
    """``python -m gateway serve`` on ``cores`` (``taskset -c`` list), configured by env only.

    It runs in ``tmpdir`` with every inherited ``GATEWAY_*`` variable removed, so neither a
    developer's environment nor a ``.env`` in the checkout changes the gateway under test. The
    ``gateway`` package is this checkout's, or the one ``PYTHONPATH`` names when set.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env.update(settings, GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port))
    # From tmpdir, `-m gateway` would import the gateway the interpreter has installed, which
    # in a git worktree sharing another checkout's venv is that other checkout's.
    # A PYTHONPATH of one's own goes first: it names the tree to measure (another commit's).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(CHECKOUT)]))
    command = ["taskset", "-c", cores, "env", "-C", str(tmpdir), sys.executable]
    log = tmpdir / f"{name}.log"
    child = spawn(stack, [*command, "-m", "gateway", "serve"], log, env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: port if get(url, "/ready")[0] == 200 else None, child, log)
    # /ready answers once one worker serves; each listens on its own socket once its app has
    # started (gateway/http/workers.py), and connections opened before go to those listening.
    workers = int(settings.get("GATEWAY_WORKERS", "1"))
    wait_for(lambda: port if listening(port) >= workers else None, child, log)
    return Server(url, child.pid)


def listening(port: int) -> int:
    """Sockets listening on local TCP `port`."""
    return len(tcp_sockets(port, TCP_LISTEN))


def shadowed_settings(stack: ExitStack, primary: str, home: Path) -> dict[str, str]:
    """`gateway_settings` with every request shadowed to a second static nginx (load core)."""
    folder = home / "candidate"
    folder.mkdir(parents=True, exist_ok=True)
    return gateway_settings(primary, home, shadow=start_nginx(stack, folder, LOAD_CORE))


def burst_settings(
    primary: str,
    home: Path,
    candidate: str | None = None,
    reader: bool = False,
    pool: Sequence[str] = (),
) -> dict[str, str]:
    """`gateway_settings` for streams in engine steps: nothing refused or queued, and with a
    ``candidate``, every stream shadowed to it (streamed too), none dropped; with ``reader``,
    read in the worker's child (``GATEWAY_SHADOW_READER=process``); with ``pool``, the primary
    is a replica pool of ``primary`` and those endpoints."""
    env = gateway_settings(primary, home, candidate, capacity=BURST_CAPACITY, pool=pool)
    if candidate is not None:
        env |= {"GATEWAY_SHADOW_MAX_IN_FLIGHT": str(BURST_CAPACITY)}
    if reader:
        env |= {"GATEWAY_SHADOW_READER": "process"}
    return env


def gateway_settings(
    primary: str,
    home: Path,
    shadow: str | None = None,
    busy_poll_us: int | str = "auto",
    routes: int = 1,
    capacity: int | None = None,
    pool: Sequence[str] = (),
) -> dict[str, str]:
    """The gateway's environment: one backend per upstream; records (if any) under ``home``.
    With ``routes`` > 1, that many routes, each with a backend of its own on ``primary``; the
    load's model is one of them. ``capacity``: the backends' `max_concurrency` and `max_queue`.
    With ``pool``, the primary is a replica pool of ``primary`` and those endpoints."""
    backend: dict[str, Any] = {"kind": "vllm", "model": MODEL, "max_concurrency": 1100}
    # (1,100: at least the 1,000 streams of the stream point, none queued inside the gateway)
    if capacity is not None:
        backend |= {"max_concurrency": capacity, "max_queue": capacity}
    backends = {"primary": {**backend, "url": primary}}
    if pool:
        backends = {"primary": {**backend, "urls": [primary, *pool]}}
    env = {
        "GATEWAY_PRIMARY": "primary",
        "GATEWAY_WORKERS": "1",
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_RECORDS_URL": f"sqlite:///{home / 'records' / 'pairs.db'}",
        "GATEWAY_BUSY_POLL_US": str(busy_poll_us),
        # The upstreams answer one canned body whatever is asked, so they fail the conformance
        # probes, and the gateway would then refuse the load's `response_format` with a 400;
        # on the burst points' slow steps the probes' own streams would also run through the
        # measurement.
        "GATEWAY_PROBE_CONFORMANCE_INTERVAL": "0",
    }
    if shadow is not None:
        backends["candidate"] = {**backend, "url": shadow}
        env |= {"GATEWAY_SHADOW": "candidate", "GATEWAY_SHADOW_RATE": "1"}
        # As many shadow calls in flight as the load has requests: with the default 32 at
        # c=64 a third of the sampled requests were dropped, and the point measured that.
        env |= {"GATEWAY_SHADOW_MAX_IN_FLIGHT": str(SHADOW_IN_FLIGHT)}
        env |= {"GATEWAY_RECORDS_TEXT": "hashes"}
    if routes > 1:
        del env["GATEWAY_PRIMARY"]  # the single-model shorthand; routes name their primaries
        names = [f"model-{n}" for n in range(routes - 1)]
        names.insert(len(names) // 2, MODEL)  # neither first nor last: a dict has no order cost
        backends = {f"engine-{n}": {**backend, "url": primary} for n in range(routes)}
        table = {name: {"primary": f"engine-{n}"} for n, name in enumerate(names)}
        env["GATEWAY_ROUTES"] = json.dumps(table)
    return {**env, "GATEWAY_BACKENDS": json.dumps(backends)}


def get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET ``path``; (0, b"") when nothing answers yet."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a gateway's /metrics samples named ``name`` (0 when it does not answer)."""
    return metrics(url, {name: (name, labels or {})})[name]


def metrics(url: str, wanted: dict[str, tuple[str, dict[str, str]]]) -> dict[str, float]:
    """Several sums of samples (by key: a name and labels) from one scrape of /metrics."""
    text = get(url, "/metrics")[1].decode()
    return {key: sum_samples(text, name, labels) for key, (name, labels) in wanted.items()}


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and its live descendants (a gateway's workers)."""
    return own_ticks(pid) + sum(tree_ticks(pid).values())


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a gateway's workers, its shadow reader), from one scan
    of /proc. A point finds them before its load: a scan costs milliseconds, and run while the
    proxy works it is time taken from the proxy or its load."""
    return [pid, *tree_ticks(pid)]


def cpu_split(pids: Sequence[int]) -> tuple[int, int]:
    """(user, system) ticks of ``pids``: the Python and the loop's own work apart from the
    system calls (the socket reads and writes)."""
    user = system = 0
    for each in pids:
        fields = stat_fields(each)
        if fields is not None:
            user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of ``pids`` together, in MiB (VmRSS)."""
    return sum(_vm_rss_kb(p) for p in pids) / 1024.0


def keep_to_the_load_core() -> None:
    """Pins this process (a benchmark's harness) and what it starts unpinned to the load core:
    left to the scheduler, its sampling ran on the proxy's core, where it delayed the proxy."""
    os.sched_setaffinity(0, {LOAD_CORE})


def _vm_rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
