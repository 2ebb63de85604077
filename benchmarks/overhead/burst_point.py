"""Streams in engine steps through one gateway, for comparing commits: delay and CPU per chunk.

Usage: ``python benchmarks/overhead/burst_point.py synchronised|cadence [quick] [shadow]
[direct] [direct-shadowed] [beside] [floor] [poll-off] [reader] [pool] [half-step] [by-index]
[sweep=MS] [idle]``

``quick``: the overhead run's ``--quick`` loads; ``shadow``: every stream shadowed to a second
ticked upstream; ``direct`` and ``floor``: the upstream without a proxy and the Python floor,
measured first, in the same run; ``direct-shadowed``: direct while a second ticked upstream on
the load core streams the same load to a second client on the gateway's core, which is what a
shadowed gateway's candidate upstream adds to the load core with no proxy at all; ``beside``:
an unshadowed gateway alone, then while a plain client on its core reads the candidate's
upstream, at the worker's priority and at the shadow reader's (the cheapest shadow there could
be), before the gateway of the other flags; ``poll-off``: the gateway with
``GATEWAY_BUSY_POLL_US=0``; ``reader``: the shadowed streams read in a child process
(``GATEWAY_SHADOW_READER=process``; the CPU and RSS figures include the child's);
``pool``: the gateway's backend a replica pool of three ticked upstreams (the streams spread
over them); ``half-step``: the candidate's upstream steps half a step after the primary's (as
another engine on its own clock would), where by default both step on the same grid;
``by-index``: also the delay p99 of each chunk index; ``sweep=MS``: the readers ``beside`` read
each stream, after its first event, only every MS ms (a sweep longer than the run reads nothing
until the end); ``idle``: the second reader ``beside`` runs under ``SCHED_IDLE``, not nice 10.

Starts the ticked SSE upstream (core 0) and ``python -m gateway serve`` (core 1) from whatever
``gateway`` package Python imports, so ``PYTHONPATH=<a worktree of another commit>`` measures that
commit, as ``stream_point.py`` does for staggered streams. The CPU time per chunk (from /proc,
after every stream opened) barely moves with other processes on the machine, where the delays
do: it is the figure to compare on a shared machine.
"""

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import BurstLoad, BurstResult, Point, beside_candidate, burst_point
from procs import (
    GATEWAY_CORE,
    LOAD_CORE,
    READER_NICE,
    burst_settings,
    keep_to_the_load_core,
    start_floor_proxy,
    start_gateway,
    start_sse_upstream,
)
from run import FULL, QUICK


def main() -> int:
    keep_to_the_load_core()
    mode, flags = sys.argv[1], set(sys.argv[2:])
    plan = QUICK if "quick" in flags else FULL
    load: BurstLoad = plan.synchronised if mode == "synchronised" else plan.cadence
    by_index = "by-index" in flags
    sweep_ms = next((int(f.removeprefix("sweep=")) for f in flags if f.startswith("sweep=")), 0)
    points = []
    with tempfile.TemporaryDirectory(prefix="burst-point-") as name, ExitStack() as stack:
        tmp = Path(name)
        sse = start_sse_upstream(stack, tmp / "primary", LOAD_CORE, 0.0, load.tick_ms).url
        if "direct" in flags:
            points.append(burst_point(mode, "direct", sse, load, None, by_index))
        if "floor" in flags:
            with ExitStack() as inner:
                floor = start_floor_proxy(inner, tmp / "floor", GATEWAY_CORE, sse)
                points.append(burst_point(mode, "floor", floor.url, load, floor.pid, by_index))
        candidate = None
        if flags & {"shadow", "direct-shadowed", "beside"}:
            phase = 0.5 if "half-step" in flags else 0.0  # the candidate's steps, half a step on
            candidate = start_sse_upstream(
                stack, tmp / "cand", LOAD_CORE, 0.0, load.tick_ms, phase
            ).url
        if candidate is not None and "direct-shadowed" in flags:
            points.append(beside_candidate(mode, "direct-shadowed", sse, candidate, load, by_index))
        if candidate is not None and "beside" in flags:
            with ExitStack() as inner:
                home = tmp / "beside"
                home.mkdir()
                plain = start_gateway(
                    inner, home, str(GATEWAY_CORE), burst_settings(sse, home), "gateway"
                )
                points.append(burst_point(mode, "gateway", plain.url, load, plain.pid, by_index))
                for nice in (0, None if "idle" in flags else READER_NICE):
                    path = "gateway, a reader beside at " + _priority(nice) + _reading(sweep_ms)
                    points.append(beside_candidate(
                        mode, path, plain.url, candidate, load, by_index, plain.pid, nice, sweep_ms
                    ))  # fmt: skip
        pool = []
        if "pool" in flags:  # two more ticked upstreams, for a replica pool of three
            pool = [start_sse_upstream(stack, tmp / f"replica{n}", LOAD_CORE, 0.0, load.tick_ms).url
                    for n in (2, 3)]  # fmt: skip
        shadow_to = candidate if "shadow" in flags else None
        settings = burst_settings(sse, tmp, shadow_to, reader="reader" in flags, pool=pool)
        if "poll-off" in flags:
            settings["GATEWAY_BUSY_POLL_US"] = "0"
        gateway = start_gateway(stack, tmp, str(GATEWAY_CORE), settings, "gateway")
        points.append(burst_point(mode, "gateway", gateway.url, load, gateway.pid, by_index))
    for point in points:
        show(point)
    return 1 if any(point.result.errors for point in points) else 0


def _priority(nice: int | None) -> str:
    return "SCHED_IDLE" if nice is None else f"nice {nice}"


def _reading(sweep_ms: int) -> str:
    return f", reading every {sweep_ms} ms" if sweep_ms else ""


def show(point: Point) -> None:
    got = point.result
    assert isinstance(got, BurstResult)
    print(f"path={point.path} streams={got.streams} counted={got.counted} "
          f"cpu_per_chunk={got.cpu_us_per_chunk} user={got.user_us_per_chunk} "
          f"delay_p50={got.delay_p50_ms} "
          f"delay_p99={got.delay_p99_ms} gap_p99={got.gap_p99_ms} coalesced={got.coalesced} "
          f"reordered={got.reordered} errors={got.errors} rss={point.rss_mb}")  # fmt: skip
    if got.delay_p99_ms_by_index:
        print("  delay p99 by index:", got.delay_p99_ms_by_index)


if __name__ == "__main__":
    sys.exit(main())
