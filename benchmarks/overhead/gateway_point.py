"""One gateway load point, for comparing commits: req/s, latency and CPU per request.

Usage: ``python benchmarks/overhead/gateway_point.py CONNECTIONS SECONDS [shadow] [pool]
[poll=US]`` (``shadow``: every request also shadowed to a second nginx, as the overhead run's
shadow point; ``pool``: the primary a replica pool of three nginx, as the overhead run's pool
point; ``poll=US``: the gateway's ``GATEWAY_BUSY_POLL_US``, ``auto`` (its default) when not
given)

Starts nginx's static answer (core 0) and ``python -m gateway serve`` (core 1) from whatever
``gateway`` package Python imports, so ``PYTHONPATH=<a worktree of another commit>`` measures that
commit with this harness; wrk loads it from core 0 after a 2 s warm-up. The optimisation log in
benchmarks/README.md was taken this way, one worktree per commit.
"""

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from procs import (
    cpu_ticks,
    gateway_settings,
    keep_to_the_load_core,
    metrics,
    shadowed_settings,
    start_gateway,
)

from benchmarks.upstream_client.servers import start_nginx
from benchmarks.upstream_client.wrkload import run_wrk

HERE = Path(__file__).resolve().parent
POST = HERE.parent / "upstream_client" / "post.lua"
COUNTS = {  # read before and after the measured load, one scrape each
    "served": ("gateway_requests_total", {}),
    "completed": ("gateway_shadow_completed_total", {}),
    "dropped": ("gateway_shadow_dropped_total", {}),
}


def main() -> int:
    keep_to_the_load_core()
    connections, seconds = int(sys.argv[1]), int(sys.argv[2])
    options = sys.argv[3:]
    shadowed = "shadow" in options
    poll_us = next((o.removeprefix("poll=") for o in options if o.startswith("poll=")), "auto")
    with tempfile.TemporaryDirectory(prefix="gateway-point-") as name, ExitStack() as stack:
        tmp = Path(name)
        (tmp / "nginx").mkdir()
        upstream = start_nginx(stack, tmp / "nginx", 0)
        if shadowed:
            settings = shadowed_settings(stack, upstream, tmp)
        elif "pool" in options:
            more = []
            for n in (2, 3):
                (tmp / f"nginx-{n}").mkdir()
                more.append(start_nginx(stack, tmp / f"nginx-{n}", 0))
            settings = gateway_settings(upstream, tmp, pool=more)
        else:
            settings = gateway_settings(upstream, tmp)
        settings["GATEWAY_BUSY_POLL_US"] = poll_us
        gateway = start_gateway(stack, tmp, "1", settings, "gateway")
        url = gateway.url + "/v1/chat/completions"
        run_wrk(url, connections, 2, POST, 0)
        ticks, before = cpu_ticks(gateway.pid), metrics(gateway.url, COUNTS)
        result = run_wrk(url, connections, seconds, POST, 0)
        ticks = cpu_ticks(gateway.pid) - ticks
        after = metrics(gateway.url, COUNTS)
    served, completed, dropped = (after[key] - before[key] for key in COUNTS)
    cpu_us = ticks / os.sysconf("SC_CLK_TCK") / served * 1e6
    # A dropped shadow costs next to nothing: a run that drops some is not comparable.
    shares = f" shadowed={completed / served:.0%} dropped={dropped / served:.0%}"
    print(f"c={connections} req/s={result.rps:.0f} p50={result.p50_ms} ms p99={result.p99_ms} ms "
          f"errors={result.errors} cpu_per_request={cpu_us:.1f} us"
          + (shares if shadowed else ""))  # fmt: skip
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
