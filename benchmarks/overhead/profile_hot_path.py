"""Profile the gateway's non-streaming hot path under load: where each microsecond goes.

Usage: ``python benchmarks/overhead/profile_hot_path.py [--duration S] [--out DIR] [--flamegraph]
[--shadow] [--bursts synchronised|cadence]``

The overhead benchmark's setup (nginx's static answer on core 0, one gateway process on core 1,
wrk on core 0) with py-spy sampling the gateway, itself on core 0, in non-blocking mode (the
gateway is never paused, so its throughput stays as measured without it). Busy samples are
sorted into hot-path steps (stacks.py) and scaled to microseconds per request with the
gateway's CPU time and request count over the same window, both read from the gateway itself
(/proc and /metrics). Writes the raw stacks and, with ``--flamegraph``, an SVG flame graph.

With ``--bursts``, the load is the overhead run's streams in engine steps instead
(``burst_client.py`` against ``sse_upstream.py --tick-ms``): sampled from the moment every
stream has its first event to the last step, and scaled to microseconds per relayed chunk.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import POST_LUA, BurstLoad
from procs import (
    GATEWAY_CORE,
    HERE,
    LOAD_CORE,
    burst_settings,
    cpu_ticks,
    gateway_settings,
    keep_to_the_load_core,
    metric,
    shadowed_settings,
    start_gateway,
    start_sse_upstream,
)
from run import FULL
from stacks import breakdown, parse_collapsed, render

from benchmarks.upstream_client.interference import other_cpu_percent, snapshot
from benchmarks.upstream_client.servers import pinned, start_nginx

WARMUP_S = 2


def main() -> int:
    keep_to_the_load_core()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds sampled")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, help="folder for stacks.txt and breakdown.md")
    parser.add_argument("--flamegraph", action="store_true", help="also sample a flame graph")
    parser.add_argument(
        "--shadow", action="store_true", help="every request shadowed to a second upstream"
    )
    parser.add_argument("--bursts", choices=["synchronised", "cadence"], help="streams in steps")
    args = parser.parse_args()
    if args.bursts and args.flamegraph:
        parser.error("--bursts samples one window: raw stacks only, no --flamegraph")
    if shutil.which("py-spy") is None:
        parser.error("py-spy is not installed: pip install py-spy")
    out = args.out or Path(tempfile.mkdtemp(prefix="overhead-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.bursts:
        return bursts(args, out)
    with tempfile.TemporaryDirectory(prefix="overhead-profile-") as name, ExitStack() as stack:
        tmp = Path(name)
        (tmp / "upstream").mkdir()
        upstream = start_nginx(stack, tmp / "upstream", LOAD_CORE)
        if args.shadow:
            settings = shadowed_settings(stack, upstream, tmp)
        else:
            settings = gateway_settings(upstream, tmp)
        gw = start_gateway(stack, tmp, str(GATEWAY_CORE), settings, "gw")
        seconds = WARMUP_S + args.duration * (2 if args.flamegraph else 1) + 1
        wrk = _wrk(gw.url, args.connections, seconds)
        try:
            time.sleep(WARMUP_S)
            ticks, requests, before = cpu_ticks(gw.pid), _requests(gw.url), snapshot(os.getpid())
            _py_spy(gw.pid, args, "raw", out / "stacks.txt")
            others = other_cpu_percent(before, snapshot(os.getpid()))
            ticks, requests = cpu_ticks(gw.pid) - ticks, _requests(gw.url) - requests
            if args.flamegraph:
                _py_spy(gw.pid, args, "flamegraph", out / "flamegraph.svg")
        finally:
            wrk.wait(timeout=seconds + 30)
    cpu_s = ticks / os.sysconf("SC_CLK_TCK")
    us_per_request = cpu_s / max(requests, 1) * 1e6
    heading = (
        f"{requests / args.duration:,.0f} requests/s at c={args.connections} while sampled, "
        f"gateway CPU {100 * cpu_s / args.duration:.0f} % of a core, "
        f"{us_per_request:.0f} µs of CPU per request; other processes used {others:.0f} % "
        "of a core meanwhile"
    )
    table = render(breakdown(parse_collapsed((out / "stacks.txt").open())), us_per_request)
    (out / "breakdown.md").write_text(f"{heading}\n\n{table}\n")
    print(f"{heading}\n\n{table}\n\nwritten to {out}")
    return 0


def bursts(args: argparse.Namespace, out: Path) -> int:
    """The gateway relaying streams in engine steps, sampled once every stream has opened."""
    load: BurstLoad = getattr(FULL, args.bursts)
    args.duration = int((load.chunks - 1) * load.tick_ms / 1000) + 2  # to the last step
    with tempfile.TemporaryDirectory(prefix="overhead-profile-") as name, ExitStack() as stack:
        tmp = Path(name)
        sse = start_sse_upstream(stack, tmp / "primary", LOAD_CORE, 0.0, load.tick_ms).url
        candidate = None
        if args.shadow:
            candidate = start_sse_upstream(stack, tmp / "cand", LOAD_CORE, 0.0, load.tick_ms).url
        gw = start_gateway(stack, tmp, str(GATEWAY_CORE), burst_settings(sse, tmp, candidate), "gw")
        command = [sys.executable, str(HERE / "burst_client.py"), gw.url]
        command += ["--streams", str(load.streams), "--chunks", str(load.chunks)]
        with subprocess.Popen(
            [*pinned(LOAD_CORE), *command], stdout=subprocess.PIPE, text=True
        ) as client:
            assert client.stdout is not None
            while client.stdout.readline().strip() != "opened":
                pass
            ticks, before = cpu_ticks(gw.pid), snapshot(os.getpid())
            _py_spy(gw.pid, args, "raw", out / "stacks.txt")
            others = other_cpu_percent(before, snapshot(os.getpid()))
            ticks = cpu_ticks(gw.pid) - ticks
            counted = json.loads(client.communicate(timeout=120)[0])["counted"]
    cpu_s = ticks / os.sysconf("SC_CLK_TCK")
    us_per_chunk = cpu_s / max(counted, 1) * 1e6
    heading = (
        f"{args.bursts}: {load.streams} streams, a chunk each every {load.tick_ms:g} ms"
        f"{', every stream shadowed' if args.shadow else ''}; {counted:,} chunks relayed while "
        f"sampled, gateway CPU {100 * cpu_s / args.duration:.0f} % of a core, "
        f"{us_per_chunk:.1f} µs of CPU per chunk; other processes used {others:.0f} % "
        "of a core meanwhile"
    )
    table = render(breakdown(parse_collapsed((out / "stacks.txt").open())), us_per_chunk, "chunk")
    (out / "breakdown.md").write_text(f"{heading}\n\n{table}\n")
    print(f"{heading}\n\n{table}\n\nwritten to {out}")
    return 0


def _wrk(url: str, connections: int, seconds: int) -> "subprocess.Popen[bytes]":
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(POST_LUA), url]
    return subprocess.Popen([*pinned(LOAD_CORE), *command], stdout=subprocess.DEVNULL)


def _py_spy(pid: int, args: argparse.Namespace, fmt: str, target: Path) -> None:
    options = ["--pid", str(pid), "--rate", str(args.rate), "--duration", str(args.duration)]
    options += ["--nonblocking", "--format", fmt, "--output", str(target)]
    command = [*pinned(LOAD_CORE), "py-spy", "record", *options]
    subprocess.run(command, check=True, capture_output=True, timeout=args.duration + 30)


def _requests(url: str) -> float:
    return metric(url, "gateway_requests_total")


if __name__ == "__main__":
    sys.exit(main())
