"""One load point: wrk (non-streaming) or the SSE client (streaming), with CPU accounting.

Every point records, from /proc, what each side used meanwhile (percent of one core): the
proxy under test (gateway or nginx, workers included), the rest of this benchmark (load
generator and upstreams, on the other core) and, via ``upstream_client/interference.py``,
processes outside the benchmark. A point disturbed by others beyond ``NOISY_PCT`` is
repeated; the least disturbed attempt is kept.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from procs import GATEWAY_CORE, HERE, LOAD_CORE, cpu_split, cpu_ticks, metric, process_tree, rss_mb

from benchmarks.upstream_client.interference import (
    Snapshot,
    other_cpu_percent,
    snapshot,
    wait_until_quiet,
)
from benchmarks.upstream_client.servers import HERE as UPSTREAM_CLIENT
from benchmarks.upstream_client.servers import pinned
from benchmarks.upstream_client.wrkload import WrkResult, run_wrk

NOISY_PCT = 10.0
SETTLE_S = 1.0
QUIET_WAIT_S = 60.0
POST_LUA = UPSTREAM_CLIENT / "post.lua"  # the colleague's ~400-byte chat-completion POST
NGINX_TEMPLATE = UPSTREAM_CLIENT / "nginx.conf.template"  # nginx with the static answer
T = TypeVar("T")


def benchmark_body() -> bytes:
    """The body wrk sends in the overhead run (post.lua's ``wrk.body``, Lua escapes undone)."""
    found = re.search(r"wrk\.body = '(.*)'", POST_LUA.read_text())
    if found is None:
        raise SystemExit(f"no wrk.body in {POST_LUA}")
    return found[1].replace("\\\\", "\\").encode()


def static_answer() -> bytes:
    """The chat completion nginx serves in the overhead run (its `return 200 '...'`)."""
    found = re.search(r"return 200 '(.*)';", NGINX_TEMPLATE.read_text())
    if found is None:
        raise SystemExit(f"no static answer in {NGINX_TEMPLATE}")
    return re.sub(r"\\(.)", r"\1", found[1]).encode()  # nginx's escapes undone


@dataclass(frozen=True)
class StreamResult:
    """What ``sse_client.py`` measured; latencies in milliseconds."""

    streams: int
    errors: int
    short_streams: int
    events: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    gap_p50_ms: float | None
    gap_p99_ms: float | None
    gap_p999_ms: float | None
    client_cpu_pct: float


@dataclass(frozen=True)
class BurstResult:
    """What ``burst_client.py`` measured (latencies in milliseconds), and the proxy's CPU per
    chunk relayed after every stream had opened (µs; None for the direct path)."""

    streams: int
    errors: int
    short_streams: int
    events: int
    counted: int
    delay_p50_ms: float | None
    delay_p99_ms: float | None
    delay_p999_ms: float | None
    gap_p50_ms: float | None
    gap_p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    coalesced: int
    reordered: int
    client_cpu_pct: float
    opened_s: float
    cpu_us_per_chunk: float | None = None
    user_us_per_chunk: float | None = None  # of which in user mode (not system calls)
    delay_p99_ms_by_index: dict[str, float] | None = None  # with ``by_index``


@dataclass
class Point:
    """One measured point of one path."""

    scenario: str  # "http", "stream", "shadow", "workers", "synchronised" or "cadence"
    path: str
    concurrency: int
    result: WrkResult | StreamResult | BurstResult
    other_cpu_pct: float = 0.0
    proxy_cpu_pct: float | None = None
    bench_cpu_pct: float = 0.0  # load generator and upstreams (and a proxy sharing their core)
    rss_mb: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def noisy(self) -> bool:
        return self.other_cpu_pct > NOISY_PCT

    def as_json(self) -> dict[str, Any]:
        row = {k: v for k, v in vars(self).items() if k != "result"}
        fields = {k: v for k, v in vars(self.result).items() if k != "other_cpu_pct"}
        return {**fields, **row, "noisy": self.noisy}


def http_point(scenario: str, path: str, url: str, connections: int, duration: int) -> Point:
    """wrk, one thread on the load core, closed loop, ``connections`` keep-alive connections."""
    result = run_wrk(url, connections, duration, POST_LUA, LOAD_CORE)
    return Point(scenario, path, connections, result)


@dataclass(frozen=True)
class StreamLoad:
    """A streaming point: concurrent streams, events per stream, seconds counted and not."""

    streams: int
    chunks: int
    duration: float
    warmup: float  # covers the spread start and the first stream of each worker
    spread: float  # workers start spread over this many seconds (one stream's length)


def stream_point(path: str, url: str, load: StreamLoad, proxy: int | None) -> Point:
    """The SSE client on the load core; samples the proxy's RSS (and a gateway's in-flight)."""
    command = [*pinned(LOAD_CORE), sys.executable, str(HERE / "sse_client.py"), url]
    options = {
        "--streams": load.streams, "--chunks": load.chunks, "--duration": load.duration,
        "--warmup": load.warmup, "--spread": load.spread,
    }  # fmt: skip
    command += [str(item) for pair in options.items() for item in pair]
    peak_rss, in_flight = 0.0, 0.0
    tree = process_tree(proxy) if proxy is not None else []
    counted_from = time.monotonic() + load.warmup
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as client:
        try:
            while client.poll() is None:
                time.sleep(0.2)
                if proxy is None or time.monotonic() < counted_from:
                    continue
                peak_rss = max(peak_rss, rss_mb(tree))
                half_way = counted_from + load.duration / 2
                if path.startswith("gateway") and not in_flight and time.monotonic() >= half_way:
                    in_flight = metric(url, "gateway_in_flight_requests")
            out = client.communicate(timeout=60)[0]
        finally:
            client.kill()  # a no-op once it has exited
    if client.returncode != 0:
        raise RuntimeError(f"sse_client exited with {client.returncode}")
    point = Point("stream", path, load.streams, StreamResult(**json.loads(out)))
    if proxy is not None:
        point.rss_mb = round(peak_rss, 1)
    if in_flight:
        point.extra["gateway_in_flight_mid_run"] = in_flight
    return point


def accounted(run: Callable[[], Point], proxy: int | None, retries: int) -> Point:
    """Run a point with CPU accounting; repeat it (bounded) while others disturb it."""
    best: Point | None = None
    for attempt in range(1 + max(retries, 0)):
        if attempt:
            wait_until_quiet(os.getpid(), NOISY_PCT, QUIET_WAIT_S)
        before, proxy_before = snapshot(os.getpid()), _ticks(proxy)
        point = run()
        after, proxy_after = snapshot(os.getpid()), _ticks(proxy)
        point.other_cpu_pct = other_cpu_percent(before, after)
        ours = _percent(_tree_ticks(before, after), before, after)
        if proxy is not None:
            point.proxy_cpu_pct = _percent(proxy_after - proxy_before, before, after)
            ours -= point.proxy_cpu_pct
        point.bench_cpu_pct = round(ours, 1)
        if best is None or point.other_cpu_pct < best.other_cpu_pct:
            best = point
        if not point.noisy:
            break
    assert best is not None
    return best


def _ticks(pid: int | None) -> int:
    return cpu_ticks(pid) if pid is not None else 0


def _tree_ticks(before: Snapshot, after: Snapshot) -> int:
    """Ticks this process tree used between two snapshots (as interference.py counts them)."""
    ours = after.own - before.own
    return ours + sum(ticks - before.tree.get(pid, 0) for pid, ticks in after.tree.items())


def _percent(ticks: int, before: Snapshot, after: Snapshot) -> float:
    seconds = max(after.at - before.at, 1e-9)
    return round(100.0 * ticks / os.sysconf("SC_CLK_TCK") / seconds, 1)


@dataclass(frozen=True)
class BurstLoad:
    """Streams in engine steps: opened together, ``chunks`` each, one every ``tick_ms``."""

    streams: int
    chunks: int
    tick_ms: float


def burst_client(core: int, url: str, load: BurstLoad) -> list[str]:
    """The command of ``burst_client.py`` running `load` against `url`, pinned to `core`."""
    client = [*pinned(core), sys.executable, str(HERE / "burst_client.py"), url]
    return [*client, "--streams", str(load.streams), "--chunks", str(load.chunks)]


def beside_candidate(
    scenario: str,
    path: str,
    url: str,
    candidate: str,
    load: BurstLoad,
    by_index: bool = False,
    proxy: int | None = None,
    nice: int | None = 0,
    sweep_ms: int = 0,
) -> Point:
    """`burst_point` of `url` while `candidate` streams the same load to a client on the
    proxy's core, at CPU priority `nice` (None: `SCHED_IDLE`), reading every `sweep_ms` (0: as
    chunks come). With no proxy: what a shadowed gateway's candidate upstream adds to the load
    core. With an unshadowed gateway: the cheapest shadow there could be, a plain reader of the
    candidate's streams sharing the gateway's core."""
    sink = [*burst_client(GATEWAY_CORE, candidate, load), "--sweep-ms", str(sweep_ms)]
    priority = ["chrt", "--idle", "0"] if nice is None else ["nice", "-n", str(nice)]
    with subprocess.Popen([*priority, *sink], stdout=subprocess.DEVNULL) as reader:
        point = burst_point(scenario, path, url, load, proxy, by_index)
        reader.wait(timeout=120)
    return point


def burst_point(
    scenario: str, path: str, url: str, load: BurstLoad, proxy: int | None, by_index: bool = False
) -> Point:
    """``burst_client.py`` on the load core; the proxy's peak RSS, and its CPU time from the
    moment every stream had its first event to the end, per chunk relayed meanwhile."""
    command = burst_client(LOAD_CORE, url, load) + (["--by-index"] if by_index else [])
    opened: list[tuple[int, int]] = []
    tree = process_tree(proxy) if proxy is not None else []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as client:
        lines: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(client, lines, opened, tree))
        reader.start()
        peak_rss = 0.0
        try:
            while client.poll() is None:
                time.sleep(0.2)
                if tree and opened:
                    peak_rss = max(peak_rss, rss_mb(tree))
            reader.join(timeout=60)
        finally:
            client.kill()  # a no-op once it has exited
        time.sleep(SETTLE_S)  # the proxy's work after the last chunk: stream ends, shadow pairs
        spent = cpu_split(tree)
    if client.returncode != 0 or not lines:
        raise RuntimeError(f"burst_client exited with {client.returncode}")
    fields = json.loads(lines[-1])
    if proxy is not None and opened and fields["counted"]:
        per_chunk = 1e6 / os.sysconf("SC_CLK_TCK") / fields["counted"]
        user, system = spent[0] - opened[0][0], spent[1] - opened[0][1]
        fields["cpu_us_per_chunk"] = round((user + system) * per_chunk, 2)
        fields["user_us_per_chunk"] = round(user * per_chunk, 2)
    point = Point(scenario, path, load.streams, BurstResult(**fields))
    if proxy is not None:
        point.rss_mb = round(peak_rss, 1)
    return point


def _read_lines(
    client: "subprocess.Popen[str]",
    lines: list[str],
    opened: list[tuple[int, int]],
    tree: list[int],
) -> None:
    """The client's output; the proxy's CPU ticks when it says every stream has opened."""
    assert client.stdout is not None
    for line in client.stdout:
        if line.strip() == "opened":
            opened.append(cpu_split(tree))
        else:
            lines.append(line)
