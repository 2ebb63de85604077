"""Overhead benchmark: what the gateway adds in front of a zero-cost upstream, next to nginx.

Usage: ``python benchmarks/overhead/run.py [--duration S] [--quick] [--retries N] [--pool-only]
[--json OUT] [--plot OUT.svg]``

Upstreams and load generators share core 0; the proxy under test (the gateway, one process, or
nginx, one worker) runs alone on core 1. Every path is measured in the same run, so "added" is
always path minus direct at the same load. See benchmarks/README.md for the method.
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import (
    BurstLoad,
    Point,
    StreamLoad,
    accounted,
    beside_candidate,
    burst_point,
    http_point,
    stream_point,
)
from plot import render_svg
from procs import (
    GATEWAY_CORE,
    LOAD_CORE,
    READER_NICE,
    burst_settings,
    gateway_settings,
    keep_to_the_load_core,
    metrics,
    shadowed_settings,
    start_floor_proxy,
    start_gateway,
    start_nginx_proxy,
    start_sse_upstream,
)
from report import (
    BESIDE_CANDIDATE,
    BUSY_POLL,
    BUSY_POLL_US,
    CADENCE,
    POLL_OFF,
    POOL,
    ROUTED,
    ROUTES,
    SHADOW_FLOOR,
    SHADOWED,
    SHADOWED_CHILD,
    SYNCHRONISED,
    render,
    summary,
)

from benchmarks.upstream_client.servers import run_main, start_nginx, start_proxy

FLOOR = "raw ASGI + aiohttp"  # benchmarks/upstream_client/proxy_asgi_aiohttp.py
PYTHON_FLOOR = "Python floor"  # floor_proxy.py: the loop, two sockets, two parsers, no more
PACKAGES = ["uvicorn", "uvloop", "httptools", "aiohttp", "orjson", "pydantic", "prometheus-client"]


@dataclass(frozen=True)
class Plan:
    """How long and how hard each kind of point runs."""

    duration: int  # seconds per wrk point
    retries: int  # repeats of a point disturbed by other processes
    itl_ms: float  # the SSE upstream's inter-token delay
    one: StreamLoad  # one stream at a time: TTFT
    many: StreamLoad  # many concurrent streams: gaps under load, memory
    synchronised: BurstLoad  # streams opened together, every chunk on the same engine step
    cadence: BurstLoad  # fewer streams, many short steps
    connections: tuple[int, ...] = (1, 16, 64, 256)  # wrk's, at each non-streaming path

    def with_itl(self, itl_ms: float) -> "Plan":
        """The same plan at another inter-token delay; many streams start spread over one."""
        spread = self.many.chunks * itl_ms / 1000.0
        many = replace(self.many, spread=spread, warmup=spread + 0.5)
        return replace(self, itl_ms=itl_ms, many=many)


# 1,000 streams of 20 events at 100 ms: 10,000 events/s through one gateway core. In engine
# steps (issue 23): 1,000 streams of 20 chunks, 0.5 s apart; 256 of 200 chunks, 25 ms apart.
FULL = Plan(
    8, 2, 100.0, StreamLoad(1, 3, 10.0, 0.5, 0.0), StreamLoad(1000, 20, 10.0, 2.5, 2.0),
    BurstLoad(1000, 20, 500.0), BurstLoad(256, 200, 25.0),
)  # fmt: skip
QUICK = Plan(
    1, 0, 100.0, StreamLoad(1, 2, 0.5, 0.2, 0.0), StreamLoad(100, 3, 1.0, 0.4, 0.3),
    BurstLoad(100, 4, 200.0), BurstLoad(32, 20, 25.0), connections=(1, 64),
)  # fmt: skip


def main() -> int:
    keep_to_the_load_core()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per non-streaming point (>= 1)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--plot", type=Path, help="also draw the results (.svg)")
    parser.add_argument("--itl-ms", type=float, help="inter-token delay of the SSE upstream")
    parser.add_argument(
        "--bursts-only", action="store_true", help="only the synchronised and cadence modes"
    )
    parser.add_argument("--retries", type=int, help="repeats of a disturbed point (default 2)")
    parser.add_argument(
        "--pool-only", action="store_true",
        help="direct, the gateway and the gateway with a pool of three endpoints, nothing else",
    )  # fmt: skip
    args = parser.parse_args()
    if args.plot and args.plot.suffix != ".svg":
        parser.error("--plot writes SVG (no plotting library is installed): use a .svg name")
    plan = QUICK if args.quick else FULL
    if args.duration is not None:
        if args.duration < 1:
            parser.error("wrk needs --duration >= 1")
        plan = replace(plan, duration=args.duration)
    if args.itl_ms is not None:
        plan = plan.with_itl(args.itl_ms)
    if args.retries is not None:
        if args.retries < 0:
            parser.error("--retries is a count of repeats: use 0 or more")
        plan = replace(plan, retries=args.retries)
    load_before = os.getloadavg()
    started = time.monotonic()
    points = measure(plan, bursts_only=args.bursts_only, pool_only=args.pool_only)
    print(render(points))
    errors = warn(points)
    if args.json:
        report = {
            "command": shlex.join(["python", *sys.argv]),
            "machine": {**machine(), "loadavg_before": load_before},
            "plan": asdict(plan),
            "seconds": round(time.monotonic() - started, 1),
            "points": [p.as_json() for p in points],
            "summary": summary(points),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        args.plot.write_text(render_svg(points))
    return 1 if errors else 0


def measure(plan: Plan, bursts_only: bool = False, pool_only: bool = False) -> list[Point]:
    """Non-streaming against nginx's static answer, then streams against the SSE upstream,
    each also through a replica pool of three such upstreams, then streams in engine steps.
    `pool_only`: direct, the gateway and the pool alone, at c=1 and 64 and the two stream
    loads; `bursts_only`: the streams in engine steps alone."""
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="overhead-") as name, ExitStack() as stack:
        tmp = Path(name)
        if not bursts_only:
            points += _pooled_and_plain(plan, tmp, stack, pool_only)
        if not pool_only:
            points += burst_paths(SYNCHRONISED, plan.synchronised, tmp, plan.retries)
            points += burst_paths(CADENCE, plan.cadence, tmp, plan.retries)
    return points


def _pooled_and_plain(plan: Plan, tmp: Path, stack: ExitStack, pool_only: bool) -> list[Point]:
    points: list[Point] = []
    upstream = start_nginx(stack, _dir(tmp / "upstream"), LOAD_CORE)
    more = [start_nginx(stack, _dir(tmp / f"upstream-{n}"), LOAD_CORE) for n in (2, 3)]
    if pool_only:
        points += [_http(plan, "http", "direct", upstream, c, None) for c in POOL_LOADS]
    else:
        points += http_paths(plan, tmp, upstream)
        points += shadow_and_workers(plan, tmp, upstream)
    points += pool_http(plan, tmp, upstream, more, with_single=pool_only)
    sse = start_sse_upstream(stack, _dir(tmp / "sse-1"), LOAD_CORE, plan.itl_ms).url
    sse_more = [
        start_sse_upstream(stack, _dir(tmp / f"sse-{n}"), LOAD_CORE, plan.itl_ms).url
        for n in (2, 3)
    ]
    if pool_only:
        loads = (plan.one, plan.many)
        points += [_stream(plan, "direct", sse, load, None) for load in loads]
    else:
        points += stream_paths(plan, tmp, sse)
    points += pool_streams(plan, tmp, sse, sse_more, with_single=pool_only)
    return points


POOL_LOADS = (1, 64)


def pool_http(
    plan: Plan, tmp: Path, upstream: str, more: list[str], with_single: bool
) -> list[Point]:
    """The gateway with a replica pool of three upstreams (balanced by power of two
    choices), at c=1 and 64; `with_single`: the one-endpoint gateway too, in the same run."""
    points = []
    if with_single:
        with ExitStack() as stack:
            home = _dir(tmp / "gw-single")
            env = gateway_settings(upstream, home)
            gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-single")
            points += [_http(plan, "http", "gateway", gw.url, c, gw.pid) for c in POOL_LOADS]
    with ExitStack() as stack:
        home = _dir(tmp / "gw-pool")
        env = gateway_settings(upstream, home, pool=more)
        gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-pool")
        points += [_http(plan, "http", POOL, gw.url, c, gw.pid) for c in POOL_LOADS]
    return points


def pool_streams(
    plan: Plan, tmp: Path, sse: str, more: list[str], with_single: bool
) -> list[Point]:
    """One stream and many, through a pool of three SSE upstreams."""
    loads, points = (plan.one, plan.many), []
    if with_single:
        with ExitStack() as stack:
            home = _dir(tmp / "gw-sse-single")
            env = gateway_settings(sse, home)
            gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-sse-single")
            points += [_stream(plan, "gateway", gw.url, load, gw.pid) for load in loads]
    with ExitStack() as stack:
        home = _dir(tmp / "gw-sse-pool")
        env = gateway_settings(sse, home, pool=more)
        gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-sse-pool")
        points += [_stream(plan, POOL, gw.url, load, gw.pid) for load in loads]
    return points


def http_paths(plan: Plan, tmp: Path, upstream: str) -> list[Point]:
    """Direct, nginx, the two Python floors and the gateway at every concurrency."""
    points = [_http(plan, "http", "direct", upstream, c, None) for c in plan.connections]
    with ExitStack() as stack:
        nginx = start_nginx_proxy(stack, tmp / "nginx-proxy", GATEWAY_CORE, upstream)
        points += [_http(plan, "http", "nginx", nginx.url, c, nginx.pid) for c in plan.connections]
    with ExitStack() as stack:  # upstream_client's floor: parse, forward, relay, nothing else
        url = start_proxy(stack, "proxy_asgi_aiohttp", upstream, _dir(tmp / "asgi"), GATEWAY_CORE)
        points += [_http(plan, "http", FLOOR, url, c, None) for c in plan.connections]
    with ExitStack() as stack:
        floor = start_floor_proxy(stack, tmp / "floor", GATEWAY_CORE, upstream)
        points += [
            _http(plan, "http", PYTHON_FLOOR, floor.url, c, floor.pid) for c in plan.connections
        ]
    with ExitStack() as stack:
        home = _dir(tmp / "gw")
        gw = start_gateway(stack, home, str(GATEWAY_CORE), gateway_settings(upstream, home), "gw")
        points += [_http(plan, "http", "gateway", gw.url, c, gw.pid) for c in plan.connections]
    return points + many_routes(plan, tmp, upstream) + busy_polled(plan, tmp, upstream)


def many_routes(plan: Plan, tmp: Path, upstream: str) -> list[Point]:
    """The gateway with ROUTES routes configured (each its own backend), the load on one."""
    with ExitStack() as stack:
        home = _dir(tmp / "gw-routes")
        env = gateway_settings(upstream, home, routes=ROUTES)
        gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-routes")
        return [_http(plan, "http", ROUTED, gw.url, c, gw.pid) for c in (1, 64)]


def busy_polled(plan: Plan, tmp: Path, upstream: str) -> list[Point]:
    """The Python floor at c=1 polling as the gateway does by default, and the gateway at c=1
    and 64 with polling off."""
    with ExitStack() as stack:
        floor = start_floor_proxy(stack, tmp / "floor-poll", GATEWAY_CORE, upstream, BUSY_POLL_US)
        points = [_http(plan, "http", f"{PYTHON_FLOOR}, {BUSY_POLL}", floor.url, 1, floor.pid)]
    with ExitStack() as stack:
        home = _dir(tmp / "gw-sleep")
        env = gateway_settings(upstream, home, busy_poll_us=0)
        gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-sleep")
        path = f"gateway, {POLL_OFF}"
        points += [_http(plan, "http", path, gw.url, c, gw.pid) for c in (1, 64)]
    return points


def shadow_and_workers(plan: Plan, tmp: Path, upstream: str) -> list[Point]:
    """c=64 with every request shadowed, and with two worker processes on both cores."""
    with ExitStack() as stack:
        home = _dir(tmp / "gw-shadow")
        env = shadowed_settings(stack, upstream, home)
        gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-shadow")
        shadowed = _http(plan, "shadow", "gateway, shadow 100%", gw.url, 64, gw.pid)
        time.sleep(1.0)  # let the last shadow calls and the record writer finish
        shadowed.extra = shadow_counts(gw.url)
    with ExitStack() as stack:
        cores = f"{LOAD_CORE},{GATEWAY_CORE}"
        home = _dir(tmp / "gw-workers")
        env = {**gateway_settings(upstream, home), "GATEWAY_WORKERS": "2"}
        gw = start_gateway(stack, home, cores, env, "gw-workers")
        workers = _http(plan, "workers", "gateway, 2 workers on cores 0+1", gw.url, 64, gw.pid)
    return [shadowed, workers]


def stream_paths(plan: Plan, tmp: Path, sse: str) -> list[Point]:
    """TTFT with one stream, gaps and memory with many: direct, through nginx, the Python
    floor and the gateway; TTFT through the gateway with busy polling off."""
    loads = (plan.one, plan.many)
    points = [_stream(plan, "direct", sse, load, None) for load in loads]
    with ExitStack() as stack:
        nginx = start_nginx_proxy(stack, tmp / "nginx-sse", GATEWAY_CORE, sse)
        points += [_stream(plan, "nginx", nginx.url, load, nginx.pid) for load in loads]
    with ExitStack() as stack:
        floor = start_floor_proxy(stack, _dir(tmp / "floor-sse"), GATEWAY_CORE, sse)
        points += [_stream(plan, PYTHON_FLOOR, floor.url, load, floor.pid) for load in loads]
    with ExitStack() as stack:
        home = _dir(tmp / "gw-sse")
        gw = start_gateway(stack, home, str(GATEWAY_CORE), gateway_settings(sse, home), "gw-sse")
        points += [_stream(plan, "gateway", gw.url, load, gw.pid) for load in loads]
    with ExitStack() as stack:
        home = _dir(tmp / "gw-sse-sleep")
        env = gateway_settings(sse, home, busy_poll_us=0)
        gw = start_gateway(stack, home, str(GATEWAY_CORE), env, "gw-sse-sleep")
        points.append(_stream(plan, f"gateway, {POLL_OFF}", gw.url, plan.one, gw.pid))
    return points


def burst_paths(scenario: str, load: BurstLoad, tmp: Path, retries: int) -> list[Point]:
    """Streams in engine steps through each path; the gateway also with every stream shadowed
    to a second ticked upstream (on the load core, as the primary), direct while that upstream
    streams to a client on the proxy's core (the shadowed rows' baseline), and the unshadowed
    gateway with that client beside it at the shadow reader's priority (the shadow's floor)."""
    home = _dir(tmp / scenario)
    with ExitStack() as stack:
        sse = start_sse_upstream(stack, home / "primary", LOAD_CORE, 0.0, load.tick_ms).url
        points = [_burst(scenario, "direct", sse, load, None, retries)]
        with ExitStack() as inner:
            nginx = start_nginx_proxy(inner, home / "nginx", GATEWAY_CORE, sse)
            points.append(_burst(scenario, "nginx", nginx.url, load, nginx.pid, retries))
        with ExitStack() as inner:
            floor = start_floor_proxy(inner, home / "floor", GATEWAY_CORE, sse)
            points.append(_burst(scenario, PYTHON_FLOOR, floor.url, load, floor.pid, retries))
        with ExitStack() as inner:
            gw_home = _dir(home / "gw")
            env = burst_settings(sse, gw_home)
            gw = start_gateway(inner, gw_home, str(GATEWAY_CORE), env, "gw")
            points.append(_burst(scenario, "gateway", gw.url, load, gw.pid, retries))
        with ExitStack() as inner:
            candidate = start_sse_upstream(inner, home / "candidate", LOAD_CORE, 0.0, load.tick_ms)
            beside = partial(beside_candidate, scenario, BESIDE_CANDIDATE, sse, candidate.url, load)
            points.append(accounted(beside, None, retries))
            with ExitStack() as plain:
                gw_home = _dir(home / "gw-floor")
                gw = start_gateway(
                    plain, gw_home, str(GATEWAY_CORE), burst_settings(sse, gw_home), "gw-floor"
                )
                floor_point = partial(
                    beside_candidate, scenario, SHADOW_FLOOR, gw.url, candidate.url, load,
                    proxy=gw.pid, nice=READER_NICE,
                )  # fmt: skip
                points.append(accounted(floor_point, gw.pid, retries))
            gw_home = _dir(home / "gw-shadow")
            env = burst_settings(sse, gw_home, candidate.url)
            gw = start_gateway(inner, gw_home, str(GATEWAY_CORE), env, "gw-shadow")
            shadowed = _burst(scenario, SHADOWED, gw.url, load, gw.pid, retries)
            shadowed.extra = shadow_counts(gw.url)
            points.append(shadowed)
        with ExitStack() as inner:
            candidate = start_sse_upstream(inner, home / "candidate", LOAD_CORE, 0.0, load.tick_ms)
            gw_home = _dir(home / "gw-shadow-child")
            env = burst_settings(sse, gw_home, candidate.url, reader=True)
            gw = start_gateway(inner, gw_home, str(GATEWAY_CORE), env, "gw-shadow-child")
            # The gateway's CPU and RSS include its child's (procs.cpu_split, rss_mb).
            child = _burst(scenario, SHADOWED_CHILD, gw.url, load, gw.pid, retries)
            child.extra = shadow_counts(gw.url)
            points.append(child)
    return points


def shadow_counts(url: str) -> dict[str, float]:
    """How many requests were sampled, shadowed to completion, dropped, and pairs stored."""
    names = {
        "sampled": ("gateway_shadow_sampled_total", {}),
        "completed": ("gateway_shadow_completed_total", {}),
        "dropped": ("gateway_shadow_dropped_total", {}),
        "pairs written": ("gateway_shadow_records_total", {"result": "written"}),
    }
    return metrics(url, names)


def _http(plan: Plan, scenario: str, path: str, url: str, c: int, pid: int | None) -> Point:
    return accounted(lambda: http_point(scenario, path, url, c, plan.duration), pid, plan.retries)


def _stream(plan: Plan, path: str, url: str, load: StreamLoad, pid: int | None) -> Point:
    return accounted(lambda: stream_point(path, url, load, pid), pid, plan.retries)


def _burst(
    scenario: str, path: str, url: str, load: BurstLoad, pid: int | None, retries: int
) -> Point:
    return accounted(lambda: burst_point(scenario, path, url, load, pid), pid, retries)


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def warn(points: list[Point]) -> int:
    """Print failed requests and disturbed points on stderr; return the failure count."""
    failures = 0
    for p in points:
        bad = sum(getattr(p.result, f, 0) for f in ("errors", "short_streams"))
        failures += bad
        where = f"{p.scenario} {p.path} c={p.concurrency}"
        if bad:
            print(f"WARNING: {where}: {bad} failed requests or short streams", file=sys.stderr)
        if p.noisy:
            print(f"WARNING: {where}: other processes used {p.other_cpu_pct}% of a core",
                  file=sys.stderr)  # fmt: skip
    return failures


def machine() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU model, kernel, versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "unknown")  # fmt: skip
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx.removeprefix("nginx version: "),
        "packages": {name: version(name) for name in PACKAGES},
    }


if __name__ == "__main__":
    run_main(main)
