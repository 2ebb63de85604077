"""Where the gateway's time to a stream's first event goes, step by step, one stream at a time.

Usage: ``python benchmarks/overhead/first_token_steps.py [--busy-poll-us auto|N] [--duration S]``

Runs the overhead run's one-stream point (the paced SSE upstream on core 0, one gateway on core
1) with the gateway's steps time-stamped, and prints the median time between stamps: from the
request's bytes arriving, through the body's validation and the upstream call, to the write
that sends the client its response head and first event. The stamps are wrappers installed at
the gateway's start (a ``sitecustomize`` module on its ``PYTHONPATH``); the gateway's code is
not changed, so ``PYTHONPATH=<a worktree>`` measures another commit, as ``stream_point.py``
does. Each wrapper adds a call (about 1 µs, more when cold) to the step it times.

One stream at a time leaves the gateway idle for 100 ms before each request, so every step
runs cold (benchmarks/README.md, "A step after a pause").
"""

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# The stamps, in the order one request passes them; "write" is passed twice.
STEPS = (
    ("request in", "the client's bytes reach the gateway's protocol"),
    ("request parsed", "httptools: request line, headers, body; the ASGI task created"),
    ("task running", "the event loop starts the request's task"),
    ("body read", "dispatch, auth, routing, the request's Exchange; the body read"),
    ("body valid", "parse_body: orjson and the plain-body checks (or pydantic)"),
    ("upstream send", "backend choice, the upstream request built, a pooled connection"),
    ("write", "the upstream request's bytes handed to the socket"),
    ("upstream in", "waiting: the upstream's answer (its core) and the gateway waking"),
    ("response start", "httptools on the answer; the event relayed to the ASGI send"),
    ("write", "the response head and first event built and handed to the socket"),
)
WAIT = [label for label, _ in STEPS].index("upstream in")  # its span: the upstream's
SITE = """
import sys
sys.path.insert(0, {here!r})
import first_token_steps
first_token_steps.install({out!r})
"""


def install(out: str) -> None:
    """Wraps the gateway's steps to stamp them; the stamps go to `out` when the process exits."""
    import atexit

    from backends.transport import write_batch
    from backends.transport.connection import Connection
    from gateway.http import server
    from gateway.http.cycle import Cycle
    from gateway.proxy import handler as proxy

    stamps: list[tuple[str, float]] = []
    clock = time.perf_counter

    def before(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def stamped(*args: Any, **kwargs: Any) -> Any:
            stamps.append((label, clock()))
            return original(*args, **kwargs)

        setattr(owner, name, stamped)

    def task_running(owner: Any) -> None:
        original = owner.run

        async def run(self: Any, app: Any) -> None:
            stamps.append(("task running", clock()))
            await original(self, app)

        owner.run = run

    def validated(owner: Any) -> None:
        original = owner.parse_body

        def parse_body(*args: Any) -> Any:
            stamps.append(("body read", clock()))
            parsed = original(*args)
            stamps.append(("body valid", clock()))
            return parsed

        owner.parse_body = parse_body

    before(server.HTTPProtocol, "data_received", "request in")
    before(server.HTTPProtocol, "on_message_complete", "request parsed")
    task_running(Cycle)
    validated(proxy)
    before(Connection, "send", "upstream send")
    before(Connection, "data_received", "upstream in")
    before(Cycle, "_start", "response start")
    before(write_batch.WriteBatch, "write", "write")

    def dump() -> None:
        Path(out).write_text("".join(f"{label}\t{at!r}\n" for label, at in stamps))

    atexit.register(dump)


def requests(stamps: list[tuple[str, float]]) -> list[list[float]]:
    """Each request's stamps in `STEPS` order; a request missing one is left out."""
    found, labels = [], [label for label, _ in STEPS]
    index = 0
    while index < len(stamps):
        if stamps[index][0] != labels[0]:
            index += 1
            continue
        times, step = [stamps[index][1]], 1
        index += 1
        while index < len(stamps) and step < len(labels) and stamps[index][0] != labels[0]:
            if stamps[index][0] == labels[step]:
                times.append(stamps[index][1])
                step += 1
            index += 1
        if step == len(labels):
            found.append(times)
    return found


def table(found: list[list[float]]) -> str:
    rows = ["| step (until the stamp) | what runs | p50 | p90 |", "|---|---|---|---|"]
    for step in range(1, len(STEPS)):
        spans = [(times[step] - times[step - 1]) * 1e6 for times in found]
        label, what = STEPS[step]
        deciles = statistics.quantiles(spans, n=10)
        p50, p90 = statistics.median(spans), deciles[-1]
        rows.append(f"| {label} | {what} | {p50:.1f} µs | {p90:.1f} µs |")
    waits = [(times[WAIT] - times[WAIT - 1]) * 1e6 for times in found]
    totals = [(times[-1] - times[0]) * 1e6 for times in found]
    own = statistics.median(total - wait for total, wait in zip(totals, waits, strict=True))
    rows.append(f"| **request in to first event out** | | {statistics.median(totals):.1f} µs | |")
    rows.append(f"| of which the gateway's own steps (not the upstream wait) | | {own:.1f} µs | |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--busy-poll-us", default="auto", help="GATEWAY_BUSY_POLL_US (default auto)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds counted")
    args = parser.parse_args()
    # Here, not at the top: the gateway imports this module too, and must find its `gateway`
    # package where its PYTHONPATH says, not in this checkout.
    sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # loads, procs; benchmarks.upstream_client
    from loads import stream_point
    from procs import (
        GATEWAY_CORE,
        LOAD_CORE,
        gateway_settings,
        keep_to_the_load_core,
        start_gateway,
        start_sse_upstream,
    )
    from run import FULL

    keep_to_the_load_core()

    load = FULL.one
    if args.duration is not None:
        load = dataclasses.replace(load, duration=args.duration, warmup=0.2)
    with tempfile.TemporaryDirectory(prefix="first-token-") as name:
        tmp = Path(name)
        out = tmp / "stamps.tsv"
        site = tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITE.format(here=str(HERE), out=str(out)))
        paths = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
        with ExitStack() as stack:
            sse = start_sse_upstream(stack, tmp, LOAD_CORE, FULL.itl_ms)
            with ExitStack() as gateway_stack:  # stopped first: it writes its stamps on exit
                settings = gateway_settings(sse.url, tmp, busy_poll_us=args.busy_poll_us)
                gateway = start_gateway(gateway_stack, tmp, str(GATEWAY_CORE), settings, "gw")
                point = stream_point("gateway", gateway.url, load, gateway.pid)
        lines = (line.split("\t") for line in out.read_text().splitlines())
        stamps = [(label, float(at)) for label, at in lines]
    found = requests(stamps)
    found = found[len(found) // 5 :]  # the first streams warm the process up
    if len(found) < 2:
        print(f"too few complete requests stamped ({len(found)})", file=sys.stderr)
        return 1
    print(f"{len(found)} streams, one at a time; GATEWAY_BUSY_POLL_US={args.busy_poll_us}; "
          f"client TTFT p50 {point.result.ttft_p50_ms} ms (not the added TTFT)")  # type: ignore[union-attr]  # fmt: skip
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
