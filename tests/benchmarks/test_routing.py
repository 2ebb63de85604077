"""The routing benchmark (benchmarks/routing): its smoke, and its simulation's own checks.

The simulation is deterministic for a seed, so the smoke also holds the goal the full run
measures (p99 TTFT at most 0.7 times round robin's) at its small size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from backends.pool.balance import Endpoint
from backends.pool.stats import LocalStats
from benchmarks.routing.sim import Replica, Request, Workload, arrivals, capacity

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_run_reports_every_policy_and_meets_the_goal(tmp_path: Path) -> None:
    out = tmp_path / "routing.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "routing" / "run.py"), "--quick",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    rows = report["policies"]
    assert list(rows) == ["round robin", "power of two choices", "p2c + prefix affinity"]
    for row in rows.values():
        assert 0 < row["ttft_p50"] <= row["ttft_p99"]
    assert rows["p2c + prefix affinity"]["cache_hit_rate"] > rows["round robin"]["cache_hit_rate"]
    assert report["goal_met"]
    assert "| round robin |" in done.stdout


def one_replica() -> Replica:
    return Replica(Endpoint("r", None, LocalStats().endpoint("sim", "r")))  # type: ignore[arg-type]


def test_a_replica_slows_with_its_batch_and_reads_a_cached_prefix_once() -> None:
    replica = one_replica()
    first: dict[int, float] = {}
    replica.queue.append((Request(0.0, 1, 1500, 100, 5), 0))
    cold = replica.step(0.0, first)
    replica.finish_step()
    replica.queue.append((Request(0.0, 1, 1500, 100, 5), 1))
    warm = replica.step(cold, first)  # the same group: its prefix is cached now
    replica.finish_step()
    assert warm < cold
    assert (replica.hits, replica.reads) == (1, 2)
    assert first[0] == cold
    steps = []
    for running in (1, 20):  # decode steps only, after the step that read the prompts
        replica = one_replica()
        for n in range(running):
            replica.queue.append((Request(0.0, -n, 0, 10, 50), n))
        replica.step(0.0, {})
        steps.append(replica.step(1.0, {}))
    assert steps[1] > steps[0]


def test_a_full_kv_cache_makes_a_queue() -> None:
    replica = one_replica()
    for n in range(3):  # each holds 10 + 9000 tokens of KV: two do not fit in 16384
        replica.queue.append((Request(0.0, -n, 0, 10, 9000), n))
    replica.step(0.0, {})
    assert (len(replica.running), len(replica.queue)) == (1, 2)
    replica.step(1.0, {})
    assert (len(replica.running), len(replica.queue)) == (1, 2)  # still no room for another


def test_arrivals_come_at_the_asked_rate() -> None:
    requests = arrivals(10.0, 5000, Workload(), seed=1)
    assert 9.5 < len(requests) / requests[-1].arrival < 10.5
    assert 1 < capacity(Workload(), count=500) < 100
