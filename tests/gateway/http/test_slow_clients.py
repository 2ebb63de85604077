"""Slowloris against one worker: 2,000 connections sending their heads or bodies a byte a
second, at a real `gateway serve` (one process) in front of the fake upstream.

While they trickle, normal clients must be served about as fast as before them (the same
requests, measured just before, with a generous factor for a shared 2-core machine); every
slow connection must get its 408 when its timeout says, and be closed; afterwards the
gateway's descriptors and memory must be back where they were. The timeouts are short here
so that the test is; the defaults are in the README.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvloop

from gateway.http.limits import raise_open_files
from tests.gateway.test_cli import Fake, chat
from tests.support.servers import gateway_process

pytestmark = pytest.mark.slow

SLOW = 2000  # half send their head a byte a second, half their body
HEAD_TIMEOUT, BODY_READ_TIMEOUT, BODY_TIMEOUT = 5.0, 2.5, 6.0
LATE = 2.0  # seconds a 408 may come after its timeout on a busy shared machine
BODY = json.dumps(chat("hello", stream=False)).encode()
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"


@dataclass
class Slow:
    """One slow connection: when its clock started (first byte of the head, or the whole head
    sent), when the answer came and what it began with, and whether the server then closed."""

    kind: str
    started: float = 0.0
    answered: float = 0.0
    answer: bytes = b""
    closed: bool = False


@pytest.fixture(scope="module")
def open_files() -> Iterator[None]:
    """2,000 sockets here and as many in the gateway (which inherits the limit): the usual
    soft limit of 1,024 would not hold them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised, _ = raise_open_files(2 * SLOW + 1024)
    assert raised >= SLOW + 512, f"the hard limit of open files ({hard}) is too low"
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def served(
    fake_upstream: Fake, tmp_path_factory: pytest.TempPathFactory, open_files: None
) -> Iterator[tuple[str, int]]:
    backend = {"kind": "vllm", "url": fake_upstream[1].url}
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_BACKENDS": json.dumps({"main": backend}),
        "GATEWAY_PRIMARY": "main",
        "GATEWAY_CLIENT_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "GATEWAY_CLIENT_BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
        "GATEWAY_CLIENT_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path_factory.mktemp('records') / 'pairs.db'}",
    }
    log = tmp_path_factory.mktemp("log") / "gateway.log"
    with log.open("w") as out, gateway_process(env, output=out) as (url, process):
        yield url, process.pid


async def slowloris(url: str, slow: list[Slow], started: threading.Event) -> None:
    """Opens every connection (in batches, within the listen backlog), then trickles."""
    host, port = url.removeprefix("http://").split(":")

    async def one(conn: Slow) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        if conn.kind == "head":
            data, conn.started = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY), time.monotonic()
        else:
            writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY))
            data, conn.started = BODY, time.monotonic()
        trickling = asyncio.ensure_future(trickle(writer, data))
        conn.answer = await reader.read(64)
        conn.answered = time.monotonic()
        trickling.cancel()
        conn.answer += await reader.read()  # to the end: the server closed
        conn.closed = True
        writer.close()

    tasks = []
    for batch in range(0, len(slow), 250):
        for conn in slow[batch : batch + 250]:
            tasks.append(asyncio.ensure_future(one(conn)))
        await asyncio.sleep(0.05)
    started.set()
    await asyncio.gather(*tasks)


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await asyncio.sleep(1.0)


def latencies(url: str, seconds: float) -> list[float]:
    """Normal requests one after another for `seconds`: each one's latency, in ms."""
    took = []
    with httpx.Client(base_url=url, timeout=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            response = client.post("/v1/chat/completions", content=BODY)
            assert response.status_code == 200, response.text
            took.append((time.perf_counter() - began) * 1000.0)
    return took


def held(pid: int) -> tuple[int, float]:
    """The gateway's open descriptors and its RSS in MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return len(os.listdir(f"/proc/{pid}/fd")), rss / 1024


def counter(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def attack(url: str) -> tuple[list[Slow], list[float]]:
    """One round of slowloris; normal latencies measured while every slow connection is open."""
    slow = [Slow("head" if i % 2 else "body") for i in range(SLOW)]
    started = threading.Event()
    runner = threading.Thread(target=uvloop.run, args=(slowloris(url, slow, started),))
    runner.start()
    assert started.wait(30)
    time.sleep(0.5)  # the last batch connected and sent its first byte
    during = latencies(url, BODY_READ_TIMEOUT)  # before the first timeout is due
    runner.join(HEAD_TIMEOUT + BODY_TIMEOUT + 30)
    assert not runner.is_alive()
    return slow, during


def test_slowloris_leaves_normal_clients_served_and_every_slow_connection_closed(
    served: tuple[str, int], run_summary: list[str]
) -> None:
    url, pid = served
    latencies(url, 1.0)  # warm: connections to the upstream, metric series
    attack(url)  # warm: the allocator's high-water mark for 2,000 connections
    fds, rss = held(pid)
    before = latencies(url, 2.0)
    head_timeouts = counter(url, 'gateway_client_timeouts_total{phase="head"}')
    body_timeouts = counter(url, 'gateway_client_timeouts_total{phase="body"}')

    slow, during = attack(url)

    usual, now = statistics.median(before), statistics.median(during)
    assert now < 3 * usual + 5.0, f"normal requests took {now:.1f} ms, {usual:.1f} ms before"
    assert len(during) > 20
    late: dict[str, object] = {}  # by kind, one example of a wrong answer or a late one
    for conn in slow:
        timeout = HEAD_TIMEOUT if conn.kind == "head" else BODY_TIMEOUT
        waited = conn.answered - conn.started
        if not (conn.answer.startswith(b"HTTP/1.1 408 ") and conn.closed):
            late[conn.kind] = (conn.answer, conn.closed)
        elif not timeout - 0.1 <= waited <= timeout + LATE:
            late[conn.kind] = round(waited, 2)
    assert late == {}
    assert counter(url, 'gateway_client_timeouts_total{phase="head"}') == head_timeouts + SLOW / 2
    assert counter(url, 'gateway_client_timeouts_total{phase="body"}') == body_timeouts + SLOW / 2

    deadline = time.monotonic() + 10  # refused connections linger 2 s
    while held(pid)[0] > fds and time.monotonic() < deadline:
        time.sleep(0.2)
    after_fds, after_rss = held(pid)
    assert after_fds <= fds, f"descriptors {fds} before, {after_fds} after"
    assert after_rss < rss + 3.0, f"RSS {rss:.1f} MB before, {after_rss:.1f} MB after"
    waits = [conn.answered - conn.started - (HEAD_TIMEOUT if conn.kind == "head" else BODY_TIMEOUT)
             for conn in slow]  # fmt: skip
    run_summary.append(
        f"slowloris, {SLOW} connections: normal p50 {usual:.1f} ms before, {now:.1f} ms during; "
        f"408s {min(waits):+.2f} to {max(waits):+.2f} s after their timeouts; "
        f"fds {fds} -> {after_fds}, RSS {rss:.1f} -> {after_rss:.1f} MB"
    )
    assert counter(url, "gateway_client_connections") <= 1  # the scrape's own
