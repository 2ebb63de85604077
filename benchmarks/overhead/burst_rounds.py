"""Issue 23's targets over several rounds of streams in engine steps, judged over the rounds.

Usage: ``python benchmarks/overhead/burst_rounds.py [--rounds N] [--quick] [--json OUT]``

One round is ``run.py --bursts-only``: every path in both modes, in one run. On a two-core
machine the client, the upstreams and whatever else runs move one round's p99 by more than the
targets allow (benchmarks/README.md, runs 13 to 20), so each target is judged on the median of
its rounds, and a count that must be zero (chunks coalesced or reordered) on its worst round;
every round's figure is shown beside it.
"""

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import Point
from procs import keep_to_the_load_core
from report import burst_targets, over_rounds, render, rounds_table
from run import FULL, QUICK, machine, measure, warn

from benchmarks.upstream_client.servers import run_main


def main() -> int:
    keep_to_the_load_core()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds to run (default 5)")
    parser.add_argument("--quick", action="store_true", help="the CI smoke's short loads")
    parser.add_argument("--json", type=Path, help="also write every round's points as JSON")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds is a count of rounds: use 1 or more")
    plan = QUICK if args.quick else FULL
    started, errors = time.monotonic(), 0
    rounds: list[list[Point]] = []
    for n in range(1, args.rounds + 1):
        points = measure(plan, bursts_only=True)
        print(f"## Round {n} of {args.rounds}\n\n{render(points)}\n", flush=True)
        errors += warn(points)
        rounds.append(points)
    per_round = [burst_targets(points) for points in rounds]
    merged = over_rounds(per_round)
    print(rounds_table(per_round, merged))
    if args.json:
        report = {
            "command": shlex.join(["python", *sys.argv]),
            "machine": machine(),
            "plan": asdict(plan),
            "seconds": round(time.monotonic() - started, 1),
            "rounds": [[p.as_json() for p in points] for points in rounds],
            "targets_by_round": [[vars(t) for t in targets] for targets in per_round],
            "targets": [{**vars(t), "verdict": t.verdict} for t in merged],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    run_main(main)
