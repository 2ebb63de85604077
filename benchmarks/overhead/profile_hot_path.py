"""Profile the gateway's non-streaming hot path under load: where each microsecond goes.

Usage: ``python benchmarks/overhead/profile_hot_path.py [--duration S] [--out DIR] [--flamegraph]``

The overhead benchmark's setup (nginx's static answer on core 0, one gateway process on core 1,
wrk on core 0) with py-spy sampling the gateway, itself on core 0, in non-blocking mode (the
gateway is never paused, so its throughput stays as measured without it). Busy samples are
sorted into hot-path steps (stacks.py) and scaled to microseconds per request with the
gateway's CPU time and request count over the same window, both read from the gateway itself
(/proc and /metrics). Writes the raw stacks and, with ``--flamegraph``, an SVG flame graph.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import POST_LUA
from procs import (
    GATEWAY_CORE,
    LOAD_CORE,
    cpu_ticks,
    gateway_settings,
    metric,
    shadowed_settings,
    start_gateway,
)
from stacks import breakdown, parse_collapsed, render

from benchmarks.upstream_client.interference import other_cpu_percent, snapshot
from benchmarks.upstream_client.servers import pinned, start_nginx

WARMUP_S = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds sampled")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, help="folder for stacks.txt and breakdown.md")
    parser.add_argument("--flamegraph", action="store_true", help="also sample a flame graph")
    parser.add_argument(
        "--shadow", action="store_true", help="every request shadowed to a second nginx"
    )
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        parser.error("py-spy is not installed: pip install py-spy")
    out = args.out or Path(tempfile.mkdtemp(prefix="overhead-profile-"))
    out.mkdir(parents=True, exist_ok=True)
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
