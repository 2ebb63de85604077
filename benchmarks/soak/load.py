"""The open-loop client: chat completions started at a fixed rate, each with a deadline.

Open loop: request ``i`` is sent at ``start + i / rate`` whether or not earlier ones were
answered, so a slow gateway meets more concurrency instead of less load, and latency is
measured from the scheduled send time (no coordinated omission). Every request ends as one
outcome: ``2xx`` (a clean answer), ``4xx``, ``5xx``, ``stream_error`` (a 200 stream that carried
an OpenAI error event), ``stream_cut`` (a 200 stream that ended without ``[DONE]`` or an error),
``timeout`` (no answer before the deadline: stuck) or ``client_error`` (the connection dropped).
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from benchmarks.soak.plan import Fault, Plan

MODEL = "fake-model"  # what tests/support/fake_upstream.py serves
ERROR_EVENT = b'data: {"error"'
DONE = b"data: [DONE]"


@dataclass(frozen=True)
class Result:
    """One request: its fault, when it was due, sent and answered (monotonic s), how it ended."""

    fault: str
    sent: float  # when it was due: an open loop's latency counts from then
    lag: float  # seconds between due and really sent: the client's own delay
    done: float
    outcome: str
    detail: str  # "<status> <error code>" for errors, "" for a clean 2xx

    @property
    def latency_ms(self) -> float:
        return (self.done - self.sent) * 1000.0


def body(fault: Fault) -> bytes:
    message = {"role": "user", "content": fault.cue}
    request = {"model": MODEL, "messages": [message], "max_tokens": 16, "stream": fault.stream}
    return orjson.dumps(request)


async def drive(url: str, plan: Plan, faults: Sequence[Fault], start: float) -> list[Result]:
    """Sends ``faults`` at ``plan.rate`` from ``start``; returns once every request ended."""
    connector = aiohttp.TCPConnector(limit=4000, keepalive_timeout=30.0)
    timeout = aiohttp.ClientTimeout(total=None)  # each request has its own deadline
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        pending = []
        for i, fault in enumerate(faults):
            due = start + i / plan.rate
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            call = send(session, url, fault, due, plan.deadline)
            pending.append(asyncio.ensure_future(call))
        return list(await asyncio.gather(*pending))


async def send(
    session: aiohttp.ClientSession, url: str, fault: Fault, due: float, deadline: float
) -> Result:
    """One request; never raises: every way it can end is an outcome."""
    headers = {"content-type": "application/json"}
    lag = time.monotonic() - due
    try:
        async with asyncio.timeout(deadline):
            async with session.post(url, data=body(fault), headers=headers) as response:
                data = await response.read()
                outcome, detail = classify(response.status, data, fault.stream)
    except TimeoutError:
        outcome, detail = "timeout", "no answer before the deadline"
    except aiohttp.ClientError as exc:
        outcome, detail = "client_error", type(exc).__name__
    return Result(fault.name, due, lag, time.monotonic(), outcome, detail)


def classify(status: int, data: bytes, stream: bool) -> tuple[str, str]:
    """The outcome of an answer, and the error it carried as ``"<status> <code>"``."""
    if status >= 400:
        return f"{status // 100}xx", f"{status} {error_code(data)}"
    if not stream:
        return "2xx", ""
    at = data.find(ERROR_EVENT)
    if at >= 0:
        event = data[at + len(b"data: ") :].split(b"\n", 1)[0]
        return "stream_error", f"stream {error_code(event)}"
    return ("2xx", "") if DONE in data else ("stream_cut", "stream ended without [DONE]")


def error_code(data: bytes) -> str:
    """The OpenAI error's ``code`` (or ``type``), or ``-`` when the body is not one."""
    try:
        error = orjson.loads(data)["error"]
        return str(error.get("code") or error.get("type") or "-")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return "-"
