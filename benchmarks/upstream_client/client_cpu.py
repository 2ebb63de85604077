"""CPU per upstream call: aiohttp, configured as the gateway used it, against
backends.transport.http1.

Usage: ``python benchmarks/upstream_client/client_cpu.py [--calls N] [--runs R] [--json OUT]``

nginx (1 worker, first core) serves the static chat completion of ``nginx.conf.template``; this
process pins itself to the second core, runs uvloop, and makes N calls with 64 concurrent
workers through each client, R runs each, the clients interleaved. A call POSTs post.lua's body
and reads the whole answer. CPU per call is ``time.process_time()`` over the N calls divided by
N (the event loop's share included); the minimum over runs is the figure, as in ``timeit``.
Each client's connections are opened and warmed before the first run.
"""

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from importlib.metadata import version
from pathlib import Path

import aiohttp
import uvloop
from interference import other_cpu_percent, snapshot
from servers import HERE, start_nginx

sys.path.insert(0, str(HERE.parents[1]))  # for backends.transport.http1
from backends.transport.http1 import Pool

WORKERS = 64
LIMIT = 256  # the gateway's default max_concurrency per backend
CONNECT, READ, TOTAL, KEEPALIVE = 2.0, 60.0, 600.0, 30.0  # the backend settings' defaults
PATH = "/v1/chat/completions"
Call = Callable[[int], Awaitable[None]]


def post_body() -> bytes:
    """The ~400-byte chat POST wrk sends, read from post.lua (a Lua single-quoted string)."""
    found = re.search(r"^wrk\.body = '(.*)'$", (HERE / "post.lua").read_text(), re.M)
    assert found, "post.lua has no wrk.body line"
    return found[1].replace("\\\\", "\\").encode()


async def aiohttp_client(stack: AsyncExitStack, url: str, body: bytes) -> Call:
    """The gateway's aiohttp session before its own client: same connector, timeouts, headers."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=LIMIT, keepalive_timeout=KEEPALIVE, enable_cleanup_closed=False
        ),
        timeout=aiohttp.ClientTimeout(total=TOTAL, sock_connect=CONNECT, sock_read=READ),
        auto_decompress=False,
        skip_auto_headers=("user-agent",),
    )
    stack.push_async_callback(session.close)
    target = url + PATH

    async def call(index: int) -> None:
        headers = {"content-type": "application/json", "x-request-id": f"{index:032x}"}
        response = await session.post(target, data=body, headers=headers)
        async with response:
            data = await response.read()
        if response.status != 200 or not data:
            raise RuntimeError(f"aiohttp: the upstream answered {response.status}")

    return call


async def http1_client(stack: AsyncExitStack, url: str, body: bytes) -> Call:
    """backends.transport.http1 as OpenAIHTTPBackend uses it: a pre-encoded head, one header."""
    pool = Pool(
        url,
        limit=LIMIT,
        keepalive=KEEPALIVE,
        connect_timeout=CONNECT,
        read_timeout=READ,
        total_timeout=TOTAL,
    )
    stack.push_async_callback(pool.close)
    head = pool.head("POST", PATH, {"content-type": "application/json"})

    async def call(index: int) -> None:
        answer = await pool.fetch(head, body, {"x-request-id": f"{index:032x}"})
        if answer.status != 200 or not answer.body:
            raise RuntimeError(f"http1: the upstream answered {answer.status}")

    return call


CLIENTS = {
    f"aiohttp {version('aiohttp')}": aiohttp_client,
    f"backends.transport.http1 (httptools {version('httptools')})": http1_client,
}


async def drive(call: Call, calls: int) -> tuple[float, float]:
    """Makes `calls` calls from WORKERS tasks; returns (CPU seconds, wall seconds)."""
    counter = iter(range(calls))

    async def worker() -> None:
        for index in counter:
            await call(index)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(url: str, calls: int, runs: int) -> dict[str, list[dict[str, float]]]:
    body = post_body()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
    async with AsyncExitStack() as stack:
        clients = {name: await make(stack, url, body) for name, make in CLIENTS.items()}
        for call in clients.values():
            await drive(call, 20 * WORKERS)  # opens and warms every connection
        for _ in range(runs):
            for name, call in clients.items():
                before = snapshot(os.getpid())
                cpu, wall = await drive(call, calls)
                results[name].append(
                    {
                        "cpu_us_per_call": 1e6 * cpu / calls,
                        "calls_per_s": calls / wall,
                        "other_cpu_pct": other_cpu_percent(before, snapshot(os.getpid())),
                    }
                )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per run and client")
    parser.add_argument("--runs", type=int, default=5, help="runs per client (interleaved)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    upstream_core, client_core = cores[0], cores[min(1, len(cores) - 1)]
    with tempfile.TemporaryDirectory(prefix="client-cpu-") as tmp, ExitStack() as stack:
        url = start_nginx(stack, Path(tmp), upstream_core)
        os.sched_setaffinity(0, {client_core})
        results = uvloop.run(measure(url, args.calls, args.runs))
    print(f"| client ({args.calls} calls, {WORKERS} workers, one core) | CPU per call (min) "
          "| runs | calls/s (best) | others' CPU (max) |\n|---|---|---|---|---|")  # fmt: skip
    for name, runs in results.items():
        cpu = [f"{us:.1f}" for us in sorted(run["cpu_us_per_call"] for run in runs)]
        best = max(run["calls_per_s"] for run in runs)
        other = max(run["other_cpu_pct"] for run in runs)
        print(f"| {name} | {cpu[0]} us | {', '.join(cpu)} | {best:,.0f} | {other:g} % |")
    if args.json:
        args.json.write_text(json.dumps({"calls": args.calls, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
