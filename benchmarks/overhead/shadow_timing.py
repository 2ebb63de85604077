"""How far the shadow's own timing leans: the same upstream behind both legs, every stream shadowed.

Usage: ``python benchmarks/overhead/shadow_timing.py synchronised|cadence [quick] [reader]``

The primary and the candidate are two copies of the ticked SSE upstream (``ticks.py``) on the
load core, stepping on the same grid, so the two legs of each pair ran the same answer at the
same moments. Whatever the pairs' timings then say apart is what the gateway's measuring adds:
the primary's leg is timed at the relay, the candidate's where the shadow reads it (in the
worker's loop, or with ``reader`` in its child at a lower priority). Prints the legs' time to
first token and end to end (p50 and p95, as the report's latency gate reads them) and the
ratio of the p95s the gate compares.
"""

import sqlite3
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import BurstLoad, burst_point
from procs import (
    GATEWAY_CORE,
    LOAD_CORE,
    burst_settings,
    keep_to_the_load_core,
    start_gateway,
    start_sse_upstream,
)
from run import FULL, QUICK

from gateway.stats import latency

FIGURES = ("ttft_ms", "e2e_ms")


def main() -> int:
    keep_to_the_load_core()
    mode, flags = sys.argv[1], set(sys.argv[2:])
    plan = QUICK if "quick" in flags else FULL
    load: BurstLoad = plan.synchronised if mode == "synchronised" else plan.cadence
    with tempfile.TemporaryDirectory(prefix="shadow-timing-") as name:
        tmp = Path(name)
        with ExitStack() as stack:
            primary = start_sse_upstream(stack, tmp / "primary", LOAD_CORE, 0.0, load.tick_ms)
            candidate = start_sse_upstream(stack, tmp / "cand", LOAD_CORE, 0.0, load.tick_ms)
            settings = burst_settings(primary.url, tmp, candidate.url, reader="reader" in flags)
            gateway = start_gateway(stack, tmp, str(GATEWAY_CORE), settings, "gateway")
            point = burst_point(mode, "gateway", gateway.url, load, gateway.pid, False)
            time.sleep(2.0)  # the last pairs are built one per turn, then written in batches
        # The gateway has stopped (SIGTERM): its records are all written.
        legs = read_legs(tmp / "records" / "pairs.db")
    pairs = len(legs["primary_ttft_ms"])
    print(f"mode={mode} reader={'reader' in flags} streams={load.streams} pairs={pairs} "
          f"delay_p99={point.result.delay_p99_ms}")  # fmt: skip
    for figure in FIGURES:  # as the report reads them (`gateway.report.summary`)
        first, second = latency(legs[f"primary_{figure}"]), latency(legs[f"candidate_{figure}"])
        name = figure.removesuffix("_ms")
        print(f"  {name}_primary_p50={first.p50:.1f} {name}_primary_p95={first.p95:.1f} "
              f"{name}_candidate_p50={second.p50:.1f} {name}_candidate_p95={second.p95:.1f} "
              f"{name}_p95_ratio={second.p95 / first.p95:.3f}")  # fmt: skip
    return 0


def read_legs(path: Path) -> dict[str, list[float]]:
    """Each leg's timings over the pairs whose legs both answered."""
    columns = [f"{leg}_{figure}" for leg in ("primary", "candidate") for figure in FIGURES]
    with sqlite3.connect(path) as db:
        rows = db.execute(
            f"SELECT {', '.join(columns)} FROM pairs WHERE kind = 'shadow' "  # noqa: S608
            "AND primary_status = 200 AND candidate_status = 200"
        ).fetchall()
    return {name: [row[n] for row in rows] for n, name in enumerate(columns)}


if __name__ == "__main__":
    sys.exit(main())
