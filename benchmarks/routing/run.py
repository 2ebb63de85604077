"""Routing quality on a simulated pool (sim.py): round robin, power of two choices, and power of
two choices with prefix affinity, at the same Poisson load (a share of the pool's capacity).

    python benchmarks/routing/run.py [--replicas 4] [--requests 20000] [--load 0.8]
                                     [--seeds 3] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.routing.sim import Workload, arrivals, capacity, simulate

POLICIES = {
    "round robin": ("round_robin", False),
    "power of two choices": ("p2c", False),
    "p2c + prefix affinity": ("p2c", True),
}
GOAL = 0.7  # p99 TTFT at most this times round robin's


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--load", type=float, default=0.8, help="share of the pool's capacity")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--affinity-max-load", type=float, default=1.25)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 3000 requests, 1 seed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    count, seeds = (3000, 1) if args.quick else (args.requests, args.seeds)
    workload = Workload()
    per_replica = capacity(workload)
    rate = args.load * args.replicas * per_replica
    rows: dict[str, dict[str, float]] = {}
    for name, (balance, affinity) in POLICIES.items():
        runs = [
            simulate(
                arrivals(rate, count, workload, seed),
                args.replicas,
                balance,
                affinity,
                seed,
                args.affinity_max_load,
            )
            for seed in range(1, seeds + 1)
        ]
        rows[name] = {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}
    baseline = rows["round robin"]["ttft_p99"]
    for row in rows.values():
        row["p99_vs_round_robin"] = row["ttft_p99"] / baseline
    report = {
        "replicas": args.replicas, "requests": count, "seeds": seeds, "load": args.load,
        "capacity_per_replica_rps": per_replica, "arrival_rps": rate, "policies": rows,
        "goal": f"p99 TTFT <= {GOAL} x round robin",
        "goal_met": rows["p2c + prefix affinity"]["p99_vs_round_robin"] <= GOAL,
    }  # fmt: skip
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def render(report: dict[str, object]) -> str:
    lines = [
        f"{report['replicas']} replicas, {report['requests']} requests x {report['seeds']} "
        f"seeds, load {report['load']} of capacity "
        f"({report['arrival_rps']:.1f} req/s; one replica: "  # type: ignore[str-format]
        f"{report['capacity_per_replica_rps']:.2f} req/s)",  # type: ignore[str-format]
        "| policy | TTFT p50 | TTFT p99 | p99 vs round robin | prefix cache hits |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["policies"].items():  # type: ignore[attr-defined]
        lines.append(
            f"| {name} | {row['ttft_p50'] * 1000:.0f} ms | {row['ttft_p99'] * 1000:.0f} ms | "
            f"{row['p99_vs_round_robin']:.2f} | {row['cache_hit_rate']:.0%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
