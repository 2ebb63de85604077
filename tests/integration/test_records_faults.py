"""The records store fails under shadow load, and nothing is lost that is not counted.

A real `gateway serve` shadows every request (primary and candidate are the fake upstream,
which answers at once: the store is what is tested, and the load must be steady) into:

- its own PostgreSQL server (`tests/support/postgres.py`), stopped for 30 s and started again;
- a SQLite file on a "full disk": the gateway's file-size limit (RLIMIT_FSIZE, set from here
  with prlimit) is lowered to the size its files have, so every write that would grow them
  fails, as on a full disk, for 10 s. A small tmpfs would be the disk itself, but mounting
  one needs root and a container that allows it; any user may limit its own processes.

Pairs wait in the bounded queue (kept small here, so that some are dropped and counted) and
are written when the store is back. Afterwards `gateway report` counts exactly the requests
sent, less the pairs the metrics say were dropped or lost; every client got its answer, in
about its usual time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.postgres import ThrowawayPostgres
from tests.support.servers import ThreadedServer, gateway_process

Fake = tuple[FakeUpstream, ThreadedServer]
RATE = 20.0  # requests a second, each shadowed: a pair each
QUEUE = 100  # pairs that may wait: fewer than an outage makes, so some are dropped
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}).encode()
FINAL = re.compile(r"records: (\d+) written, (\d+) dropped, (\d+) lost")


def environment(fake: Fake, records_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    backend = {"kind": "vllm", "url": fake[1].url, "model": MODEL}
    env |= {
        "GATEWAY_BACKENDS": json.dumps({"primary": backend, "candidate": backend}),
        "GATEWAY_PRIMARY": "primary",
        "GATEWAY_MODELS": json.dumps([MODEL]),
        "GATEWAY_SHADOW": "candidate",
        "GATEWAY_SHADOW_RATE": "1.0",
        "GATEWAY_NOISE_RATE": "0",
        "GATEWAY_RECORDS_URL": records_url,
        "GATEWAY_RECORDS_QUEUE": str(QUEUE),
        "GATEWAY_PROBE_INTERVAL": "0",
    }
    return env


def metric(url: str, name: str) -> float:
    """A metric's value, summed over its labels (0 when it has no series)."""
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def load(url: str, seconds: float) -> list[tuple[float, int, float]]:
    """Open loop at `RATE`: (when sent, status, latency in ms) of every request."""
    results: list[tuple[float, int, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(due: float) -> None:
            async with session.post(url + "/v1/chat/completions", data=BODY) as response:
                await response.read()
                results.append((due, response.status, (time.monotonic() - due) * 1000))

        start, sent = time.monotonic(), []
        for i in range(int(seconds * RATE)):
            due = start + i / RATE
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            sent.append(asyncio.ensure_future(one(due)))
        await asyncio.gather(*sent)
    return results


async def under_fault(
    url: str, before: float, fault: float, after: float,
    down: Callable[[], object], up: Callable[[], object],
) -> tuple[list[tuple[float, int, float]], float, float]:  # fmt: skip
    """The load, with `down()` at `before` seconds and `up()` `fault` seconds later; also the
    store gauge seen during the fault, and the pairs pending at its end."""
    running = asyncio.ensure_future(load(url, before + fault + after))
    await asyncio.sleep(before)
    await asyncio.to_thread(down)
    faulted = time.monotonic()
    await asyncio.sleep(fault - 1)
    store_up = await asyncio.to_thread(metric, url, "gateway_shadow_records_store_up")
    pending = await asyncio.to_thread(metric, url, "gateway_shadow_records_pending")
    await asyncio.sleep(max(faulted + fault - time.monotonic(), 0.0))
    await asyncio.to_thread(up)
    return await running, store_up, pending


def shadow_pairs_reported(records_url: str) -> int:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "report", "--format", "json"],
        env=env | {"GATEWAY_RECORDS_URL": records_url}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: the gate fails, as it should here
    report = json.loads(done.stdout)
    routes = report["routes"].values() if "routes" in report else [report]  # one route: itself
    return sum(int(route["pairs"]["shadow"]) for route in routes)


def check(
    url: str,
    results: list[tuple[float, int, float]],
    fault: tuple[float, float],
    run_summary: list[str],
    name: str,
) -> dict[str, float]:
    """Every client answered in about its usual time; the counts the report must match."""
    assert {status for _, status, _ in results} == {200}
    start = min(due for due, _, _ in results)
    usual = [ms for due, _, ms in results if due - start < fault[0]]
    during = [ms for due, _, ms in results if fault[0] <= due - start < sum(fault)]
    p50, p50_during = statistics.median(usual), statistics.median(during)
    assert p50_during < 3 * p50 + 10, (p50, p50_during)
    deadline = time.monotonic() + 30
    while metric(url, "gateway_shadow_records_pending") > 0:
        assert time.monotonic() < deadline, "the queue was not written after the store returned"
        time.sleep(0.2)
    counts = {
        "sent": len(results),
        "sampled": metric(url, "gateway_shadow_sampled_total"),
        "shadow_dropped": metric(url, "gateway_shadow_dropped_total"),
    }
    run_summary.append(
        f"records store {name}: {len(results)} requests, all 200, p50 {p50:.1f} ms before, "
        f"{p50_during:.1f} ms during the fault"
    )
    return counts


def accounted(log: str, counts: dict[str, float], reported: int, summary: list[str]) -> None:
    """`gateway report` counts what was sent, less what the metrics say was dropped or lost."""
    written, dropped, lost = map(int, FINAL.findall(log)[-1])
    summary.append(
        f"  sent {counts['sent']:g}, shadow dropped {counts['shadow_dropped']:g}, records "
        f"dropped {dropped}, lost {lost}, written {written}; gateway report: {reported} pairs"
    )
    assert counts["sampled"] == counts["sent"]  # every request shadowed
    assert dropped > 0  # the small queue overflowed during the fault: the accounting is real
    assert reported == written
    assert reported == counts["sent"] - counts["shadow_dropped"] - dropped - lost


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres().create()
    try:
        yield server
    finally:
        server.remove()


def test_postgres_stopped_for_30_s_under_shadow_load(
    fake_upstream: Fake, postgres: ThrowawayPostgres, tmp_path: Path, run_summary: list[str]
) -> None:
    env = environment(fake_upstream, postgres.url)
    with (tmp_path / "gateway.log").open("w") as out, gateway_process(env, output=out) as run:
        url, process = run
        results, store_up, pending = asyncio.run(
            under_fault(url, 3.0, 30.0, 5.0, postgres.stop, postgres.start)
        )
        assert store_up == 0
        assert pending >= QUEUE  # the queue full, and the batch in hand
        counts = check(url, results, (3.0, 30.0), run_summary, "PostgreSQL stopped 30 s")
        process.terminate()
        assert process.wait(timeout=60) == 0
    logged = (tmp_path / "gateway.log").read_text()
    assert "the store is unavailable" in logged
    assert "the store is back" in logged
    accounted(logged, counts, shadow_pairs_reported(postgres.url), run_summary)


def test_sqlite_on_a_full_disk_under_shadow_load(
    fake_upstream: Fake, tmp_path: Path, run_summary: list[str]
) -> None:
    database = tmp_path / "records" / "shadow.db"
    env = environment(fake_upstream, f"sqlite:///{database}")
    lines: list[str] = []
    with gateway_process(env, output=subprocess.PIPE) as (url, process):
        # A pipe, not a file: the limit would stop the gateway's log lines too.
        assert process.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(process.stdout or []))
        reader.start()
        limit = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)

        def full() -> None:
            room = max(path.stat().st_size for path in database.parent.iterdir())
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (room, limit[1]))

        def freed() -> None:
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, limit)

        results, store_up, pending = asyncio.run(under_fault(url, 3.0, 10.0, 4.0, full, freed))
        assert store_up == 0
        assert pending >= QUEUE
        counts = check(url, results, (3.0, 10.0), run_summary, "SQLite full disk 10 s")
        process.terminate()
        assert process.wait(timeout=60) == 0
        reader.join(timeout=10)
        process.stdout.close()
    logged = "".join(lines)
    assert "the store is unavailable (sqlite" in logged
    accounted(logged, counts, shadow_pairs_reported(f"sqlite:///{database}"), run_summary)
