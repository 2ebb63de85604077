"""What one shadowed pair costs the gateway after both answers are in, step by step.

Usage: ``python benchmarks/overhead/pair_cost.py [--pairs N] [--rounds R]``

The overhead run's shadow point (every request shadowed, records in SQLite, hashes mode) spends
its CPU in two places: the candidate's call, and this. Here the same code runs without a
server, on the gateway's core, on the overhead run's request and nginx's static answer: the
legs read (`gateway.shadow.legs`), the pair built and judged (`gateway.shadow.pairing`) and counted
(`gateway.shadow.leg.count_agreement`), redacted (`gateway.records.redaction`), turned into rows and
inserted in batches of `GATEWAY_RECORDS_BATCH` (`SqliteStore`). Prints the median of R rounds
of N pairs, in µs per pair.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Appended, so `PYTHONPATH=<a worktree of another commit>` measures that commit's code.
sys.path.append(str(Path(__file__).resolve().parents[2]))

from loads import benchmark_body, static_answer
from procs import GATEWAY_CORE

from backends.base import Route, UpstreamRequest
from gateway.metrics import Metrics
from gateway.proxy.parsing import parse_body
from gateway.records.redaction import redact
from gateway.records.sqlite import SqliteStore
from gateway.settings import Settings
from gateway.shadow import legs
from gateway.shadow.leg import count_agreement
from gateway.shadow.pairing import pair_of, params_of
from gateway.shadow.pairs import PairRecord

STEPS = ("legs", "record", "redact", "store")


async def one_round(pairs: int, batch: int, store: SqliteStore) -> dict[str, float]:
    """Seconds per pair spent in each step over `pairs` pairs."""
    body, answer = benchmark_body(), static_answer()
    payload = parse_body(Route.CHAT, body).payload
    request = UpstreamRequest(Route.CHAT, body, payload, "phi-3-mini-4k-instruct", "r1", False)
    counts = Metrics().shadow_for("pair-cost")
    queued: list[PairRecord] = []  # the recorder's queue, without its writer task
    spent = dict.fromkeys(STEPS, 0.0)
    for _ in range(pairs // batch):
        started = time.perf_counter()
        read = []
        for _ in range(batch):
            params = params_of(payload)
            primary = legs.from_body("primary", answer, 12.5)
            candidate = legs.from_body("candidate", answer, 9.5)
            read.append((params, primary, candidate))
        legs_done = time.perf_counter()
        for params, primary, candidate in read:
            pair = pair_of("shadow", request, params, primary, candidate, None, keep_text=False)
            count_agreement(counts, pair)
            queued.append(pair)
        recorded = time.perf_counter()
        prepared = [redact(pair) for pair in queued]
        queued.clear()
        redacted = time.perf_counter()
        await store.write_batch(prepared)
        stored = time.perf_counter()
        spent["legs"] += legs_done - started
        spent["record"] += recorded - legs_done
        spent["redact"] += redacted - recorded
        spent["store"] += stored - redacted
    return {step: seconds / pairs for step, seconds in spent.items()}


async def measure(pairs: int, rounds: int, batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pair-cost-") as name:
        store = SqliteStore(Path(name) / "pairs.db")
        try:
            await one_round(batch, batch, store)  # warm-up: the file, imports, first calls
            results = [await one_round(pairs, batch, store) for _ in range(rounds)]
        finally:
            await store.close()
    return {step: statistics.median(r[step] for r in results) * 1e6 for step in STEPS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown")
    args = parser.parse_args()
    os.sched_setaffinity(0, {GATEWAY_CORE})
    batch = Settings.model_fields["records_batch"].default
    costs = asyncio.run(measure(max(args.pairs, batch), args.rounds, batch))
    print(f"| step (core {GATEWAY_CORE}, batches of {batch}) | µs per pair |\n|---|---|")
    for step, us in costs.items():
        print(f"| {step} | {us:.1f} µs |")
    print(f"| **total** | {sum(costs.values()):.1f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
