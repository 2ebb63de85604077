"""Soak: the real gateway at a steady open-loop rate with upstream faults, for minutes.

Usage: ``python benchmarks/soak/run.py [--duration S] [--rate R] [--quick] [--json OUT]``

The fake upstream (``upstream.py``), this load client and the gateway (``python -m gateway
serve``, one process) are not pinned: on a shared machine the scheduler moves them off a busy
core. Exit 1 if a request got no answer before its deadline or the gateway's in-flight gauge does
not return to 0 after the load; memory is reported, never judged. See README.md for the method.
"""

import argparse
import asyncio
import json
import math
import os
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.*, gateway.*

from benchmarks.overhead.procs import (
    Server,
    gateway_settings,
    start_gateway,
)
from benchmarks.soak import redis
from benchmarks.soak.chores import ADMIN_TOKEN, reloads
from benchmarks.soak.gauges import Gauges, Sample
from benchmarks.soak.load import MODEL, drive
from benchmarks.soak.plan import FULL, QUICK, Plan, schedule
from benchmarks.soak.report import render
from benchmarks.soak.slow import lag, slowloris
from benchmarks.soak.summary import Chores, faults, recoveries, verdict, windows
from benchmarks.soak.upstream import FakeUpstreamProcess, outage
from benchmarks.upstream_client.servers import run_main

CORES = ",".join(map(str, sorted(os.sched_getaffinity(0))))  # taskset -c: every allowed core
MIN_WINDOWS = 8  # so that a quarter of the run is at least two windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, help="seconds of load (default 180)")
    parser.add_argument("--rate", type=float, help="requests started per second (default 200)")
    parser.add_argument("--quick", action="store_true", help="an 8-second smoke run")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.duration is not None:
        plan = replace(plan, duration=args.duration)
    if args.rate is not None:
        plan = replace(plan, rate=args.rate)
    if plan.duration < 4 or plan.rate <= 0:
        parser.error("--duration must be >= 4 and --rate > 0")
    plan = replace(plan, window=min(plan.window, plan.duration / MIN_WINDOWS))
    report = soak(plan)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["verdict"]["passed"] else 1


def soak(plan: Plan) -> dict[str, Any]:
    """Start the upstream and the gateway, run the load, and always stop both."""
    started, load_before = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="soak-") as name, ExitStack() as stack:
        tmp = Path(name)
        upstream = FakeUpstreamProcess(stack, tmp).start()
        limits = redis.RedisProcess(stack, tmp).start()
        env = settings(plan, upstream.url, tmp, limits.url)
        gateway = start_gateway(stack, tmp, CORES, env, "gateway")
        report = uvloop.run(measure(plan, gateway, upstream, limits))
        report["verdict"]["gateway_log_unexpected"] = unexpected(tmp / "gateway.log")
    header = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "loadavg_before": load_before},
        "plan": {**asdict(plan), "requests": plan.requests, "deadline": plan.deadline},
        "gateway_backend": json.loads(env["GATEWAY_BACKENDS"])["primary"],
        "seconds": round(time.monotonic() - started, 1),
    }
    return header | report


async def measure(
    plan: Plan, gateway: Server, upstream: FakeUpstreamProcess, limits: redis.RedisProcess
) -> dict[str, Any]:
    """Load, sample each window, crash and restart the upstream mid-run, restart Redis, reload
    the configuration, keep slow clients connected, then drain."""
    gauges = Gauges(gateway, upstream.port)
    before = await asyncio.to_thread(gauges.sample, time.monotonic())
    start = time.monotonic() + 0.2
    end = start + plan.duration
    count = round(plan.duration / plan.window)
    sampler = asyncio.ensure_future(sample_windows(gauges, start, plan.window, count))
    crash_at = start + plan.duration * plan.outage_at
    crash = asyncio.ensure_future(outage(upstream, crash_at, plan.outage))
    restart_at = start + plan.duration * plan.redis_outage_at
    restart = asyncio.ensure_future(redis.outage(limits, restart_at, plan.redis_outage))
    slow = asyncio.ensure_future(slowloris(gateway.url, plan.slow_clients, end))
    late = asyncio.ensure_future(lag(end))
    reloading = asyncio.ensure_future(reloads(gateway.url, plan.reload_every, start, end))
    url = gateway.url + "/v1/chat/completions"
    results = await drive(url, plan, schedule(plan), start)
    await asyncio.gather(crash, restart)
    chores = Chores(await slow, await reloading, limits.outages, timeouts(plan), end, await late)
    ends = await sampler
    after, drained_s = await drain(gauges, plan.drain)
    rows = windows(results, ends, start, plan.window, upstream.outages, chores)
    summary = verdict(results, rows, before, after, chores, judged=plan.duration >= 60)
    summary["drained_after_s"] = drained_s
    spans = recoveries(results, upstream.outages)
    times = zip(upstream.outages, spans, strict=True)
    outages = [_since(start, down=a, up=b, recovered=c) for (a, b), (_, c) in times]
    return {
        "outages": outages,
        "redis_outages": [_since(start, down=a, up=b) for a, b in limits.outages],
        "windows": rows,
        "faults": faults(results, spans),
        "verdict": summary,
    }


def _since(start: float, **times: float) -> dict[str, float | None]:
    """Monotonic times as seconds since the load started (None: never happened)."""
    return {name: round(t - start, 2) if t < math.inf else None for name, t in times.items()}


async def sample_windows(gauges: Gauges, start: float, width: float, count: int) -> list[Sample]:
    """One sample at the end of each window, on an absolute clock (no drift)."""
    samples = []
    for k in range(1, count + 1):
        await asyncio.sleep(max(start + k * width - time.monotonic(), 0.0))
        samples.append(await asyncio.to_thread(gauges.sample, time.monotonic()))
    return samples


async def drain(gauges: Gauges, limit: float) -> tuple[Sample, float]:
    """Once every client has its answer: wait (bounded) for in-flight 0, then sample."""
    stopped = time.monotonic()
    while True:
        sample = await asyncio.to_thread(gauges.sample, time.monotonic())
        waited = time.monotonic() - stopped
        if sample.in_flight == 0 or waited > limit:
            return sample, round(waited, 2)
        await asyncio.sleep(0.1)


def timeouts(plan: Plan) -> dict[str, float]:
    """Each slow client's timeout, by what it trickles."""
    return {"head": plan.head_timeout, "body": plan.body_timeout}


def settings(plan: Plan, upstream: str, home: Path, redis_url: str) -> dict[str, str]:
    """The overhead benchmark's gateway, with the soak's timeouts and breaker, its client
    timeouts, rate limits shared in Redis (high enough never to refuse the load: they are
    there to be counted, and to lose Redis), and the admin token its reloads need."""
    backend = {
        "kind": "vllm",
        "url": upstream,
        "model": MODEL,
        "connect_timeout": 1.0,
        "read_timeout": plan.read_timeout,
        "total_timeout": plan.total_timeout,
        "max_concurrency": 1000,
        "queue_timeout": 1.0,
        "retries": 2,
        "circuit_failures": 5,
        "circuit_cooldown": 2.0,
    }
    env = gateway_settings(upstream, home) | {"GATEWAY_PROBE_INTERVAL": "1"}
    env |= {
        "GATEWAY_CLIENT_HEAD_TIMEOUT": str(plan.head_timeout),
        "GATEWAY_CLIENT_BODY_READ_TIMEOUT": str(plan.body_read_timeout),
        "GATEWAY_CLIENT_BODY_TIMEOUT": str(plan.body_timeout),
        "GATEWAY_RATE_LIMITS": json.dumps({"requests_per_minute": round(plan.rate * 6000)}),
        "GATEWAY_RATE_LIMIT_URL": redis_url,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return env | {"GATEWAY_BACKENDS": json.dumps({"primary": backend})}


def unexpected(log: Path) -> int:
    """Lines where the gateway reports a bug (an unexpected exception), not a handled fault."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum("unexpected" in line or "Traceback" in line for line in text.splitlines())


if __name__ == "__main__":
    run_main(main)
