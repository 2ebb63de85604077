"""The shadow's streamed calls, read in a child process (`GATEWAY_SHADOW_READER=process`).

Every stream shadowed, the candidate's events are read in the same turns of the event loop as
the primary's, so at an engine's step a primary chunk can wait behind the candidate's whole step
(benchmarks/README.md, "Streams in engine steps"). In a child process the kernel shares the core
instead, and the child runs at a lower priority (`NICE`) and gives the core back after each
read: the relay goes first when both have work, and the child takes what the relay leaves.

The parent (the gateway's worker) still samples, pairs and records; the child only calls the
backend and reads the streamed answer into a `Leg`, timed from the moment the child started the
call, as the primary's leg is from the moment the relay did: a call waiting in the pipe or for
the child's turn on the core is the gateway's delay, not the candidate's. The child builds one
leg per turn of its loop, so the streams ending at the same step are read when they end. A call
the parent cancels (the shadow timeout, shutdown) is cancelled in the child, which closes the
upstream connection as the inline leg does. A child that dies fails its calls as `503` legs
and is started again by the next call.

Frames on the child's stdin and stdout: a 4-byte length, then a pickle (parent and child are
the same program). Parent to child: the log level and the backends' settings once, then one
`(id, backend name, request)` per call and `(id,)` to cancel one. Child to parent:
`READY` once its backends are built, then `(id, answer)` per call, the answer an `Answered` or
a `Failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import uvloop

from backends import registry
from backends.arrivals import Arrivals
from backends.base import Backend, EventStream, TokenIds, UpstreamRequest
from backends.errors import GatewayError
from backends.piping import pipe
from backends.registry import BackendSettings
from backends.transport.turns import OnePerTurn
from gateway.logs import configure_logging
from gateway.shadow import legs
from gateway.shadow.pairs import Leg

log = logging.getLogger("gateway.shadow.reader")

# A leg, the token ids its engine gave, and the endpoint of a replica pool that answered.
Answered = tuple[Leg, TokenIds | None, str | None]

NICE = 10  # the child's CPU priority below the gateway's (measured against 0 and SCHED_IDLE)
START_TIMEOUT = 60.0  # seconds the child may take to import and build its backends
STOP_TIMEOUT = 10.0  # seconds the child may take to leave once told, before it is killed
READY = "ready"
# Imported, not run as `-m`: the answers then pickle under the module names the parent knows.
CHILD = "from gateway.shadow.reader import main; main()"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that ended in an error: what the inline leg records for it."""

    status: int
    message: str
    endpoint: str | None = None


class ReaderFailed(GatewayError):
    """The child process could not be started."""

    default_code = "shadow_reader_failed"


class StreamReader:
    """The parent's handle on the child that reads streamed shadow calls.

    `start` runs the child and waits until it has built its backends; `read` makes one call
    there; `close` lets the child finish its calls and leave. Calls are sent over one pipe and
    answered over another, matched by id.
    """

    def __init__(self, backends: Mapping[str, BackendSettings], log_level: str = "info") -> None:
        self._setup = (log_level, dict(backends))
        self._child: asyncio.subprocess.Process | None = None
        self._listener: asyncio.Task[None] | None = None
        self._calls: dict[int, asyncio.Future[Answered | Failure]] = {}
        self._last_id = 0
        self._starting = asyncio.Lock()
        self._closed = False
        self.starts = 0  # children started, the first included

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    async def start(self) -> None:
        """Runs the child, unless it runs; `ReaderFailed` if it is not ready in time."""
        async with self._starting:
            if self._closed:
                raise ReaderFailed("the shadow reader is closed")
            if self._listener is not None and not self._listener.done():
                return  # running: its listener ends only once the child has gone
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            self.starts += 1
            try:
                _write(child, self._setup)
                assert child.stdout is not None
                ready = await asyncio.wait_for(_frame(child.stdout), START_TIMEOUT)
                if ready != READY:
                    raise ValueError(ready)
            except (Exception, asyncio.CancelledError) as exc:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                failed = ReaderFailed(
                    f"the shadow reader process did not start ({type(exc).__name__}; "
                    f"exit code {child.returncode})"
                )
                log.error("%s", failed.message)  # the caller may log only the error's type
                raise failed from None
            self._child = child
            self._listener = asyncio.create_task(self._listen(child))

    async def read(self, name: str, request: UpstreamRequest, started: float) -> Answered:
        """The streamed answer of backend `name` to `request`, read into a `Leg` by the child;
        a failed call (an error, the child gone) as a failed leg, as the inline leg reads it."""
        try:
            await self.start()
        except ReaderFailed as exc:
            return legs.failed(name, 503, exc.message, _ms(started)), None, None
        child = self._child
        assert child is not None
        self._last_id += 1
        call = self._last_id
        answer: asyncio.Future[Answered | Failure] = asyncio.get_running_loop().create_future()
        self._calls[call] = answer
        try:
            _write(child, (call, name, request))
            reply = await answer
        except asyncio.CancelledError:
            if child.returncode is None:
                _write(child, (call,))
            raise
        finally:
            del self._calls[call]
        if isinstance(reply, Failure):
            leg = legs.failed(name, reply.status, reply.message, _ms(started))
            return leg, None, reply.endpoint
        return reply

    async def close(self) -> None:
        """Lets the child finish what it runs (calls not cancelled by then), then waits for it
        to leave; kills it after `STOP_TIMEOUT`."""
        self._closed = True
        child = self._child
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
        if self._listener is not None:
            await self._listener

    async def _listen(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        try:
            while True:
                call, reply = await _frame(child.stdout)
                answer = self._calls.get(call)
                if answer is not None and not answer.done():
                    answer.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the child has gone
        except Exception as exc:  # a frame we cannot read: the child cannot be trusted now
            log.error("unreadable answer from the shadow reader process: %s", type(exc).__name__)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        code = await child.wait()
        if not self._closed:
            log.error("the shadow reader process ended (exit code %s); the next call starts "
                      "another", code)  # fmt: skip
        lost = Failure(503, "the shadow reader process ended")
        for answer in self._calls.values():
            if not answer.done():
                answer.set_result(lost)


def _write(child: asyncio.subprocess.Process, message: object) -> None:
    assert child.stdin is not None
    child.stdin.write(_framed(message))


def _framed(message: object) -> bytes:
    """One frame, as `_frame` reads it: its length, then its pickle."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def _frame(stream: asyncio.StreamReader) -> Any:
    (size,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
    # From our own parent or child over a private pipe, never from the network.
    return pickle.loads(await stream.readexactly(size))  # noqa: S301


def _ms(started: float) -> float:
    return (perf_counter() - started) * 1000.0


# The child


async def _serve(channel: int) -> None:
    """Runs calls until the parent closes our stdin, then finishes them and leaves."""
    loop = asyncio.get_running_loop()
    incoming = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(incoming), sys.stdin)
    writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(channel, "wb", 0))

    def send(message: object) -> None:
        writer.write(_framed(message))

    level, settings = await _frame(incoming)
    configure_logging(level)
    backends = {name: registry.create(name, config) for name, config in settings.items()}
    send(READY)
    running: dict[int, asyncio.Task[None]] = {}
    turns = OnePerTurn()

    async def run(call: int, name: str, request: UpstreamRequest) -> None:
        try:
            answer: Answered | Failure = await read_leg(backends[name], request, turns)
        except GatewayError as exc:
            answer = Failure(exc.status_code, exc.message, exc.endpoint)
        except asyncio.CancelledError:
            return  # the parent gave up on it: nobody waits for an answer
        except Exception as exc:  # a bug: the parent records a failed leg, as the inline leg would
            log.error("shadow read failed: %s", type(exc).__name__)
            answer = Failure(500, f"shadow read failed ({type(exc).__name__})")
        finally:
            running.pop(call, None)
        send((call, answer))

    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            message = await _frame(incoming)
            if len(message) == 1:
                task = running.get(message[0])
                if task is not None:
                    task.cancel()
            else:
                running[message[0]] = asyncio.create_task(run(*message))
    if running:
        await asyncio.wait(list(running.values()))
    for backend in backends.values():
        with contextlib.suppress(Exception):
            await backend.close()
    writer.close()


async def read_leg(backend: Backend, request: UpstreamRequest, turns: OnePerTurn) -> Answered:
    """One call, as the child reads it: the answer's events read into a `Leg`, timed from
    now, built in a turn of its own (`turns`): building a long leg takes a while, and the other
    streams' last events, read meanwhile, would be timed late."""
    started = perf_counter()
    chunks, ended, events = await read_events(backend, request, yielding=True)
    await turns.next()
    leg = legs.from_events(backend.name, chunks, started, ended)
    _yield_core()
    return leg, events.ids, events.endpoint


def _yield_core() -> None:
    """Hands the core to the relay now if it is waiting to run. A lower priority is not
    enough: a waking worker still waited for the child's time slice to end (its run-queue
    wait, benchmarks/README.md, "The child yields"); when nobody waits, this is one syscall."""
    os.sched_yield()


async def read_events(
    backend: Backend, request: UpstreamRequest, yielding: bool = False
) -> tuple[Arrivals, float, EventStream]:
    """A streamed answer's chunks, each with the time it arrived, the time it ended (its last
    piece's arrival: this task resumes later, after whatever else the loop runs first), and the
    stream (its token ids and endpoint); piped from the socket's callback, no task wake per
    event. The inline leg and the child read the same way; the child `yielding` the core after
    each read (`_yield_core`)."""
    chunks = Arrivals()

    def keep(chunk: bytes) -> bool:
        chunks.add(perf_counter(), chunk)
        if yielding:
            _yield_core()
        return True

    events = await backend.stream(request)
    try:
        await pipe(events, keep)
    finally:
        await events.aclose()
    ended = chunks.times[-1] if chunks.times else perf_counter()
    return chunks, ended, events


def main() -> None:
    # The frames get stdout to themselves: anything printed goes to stderr.
    channel = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # The parent ends the child by closing its stdin; a Ctrl-C on the terminal is the parent's.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    uvloop.run(_serve(channel))  # the loop the gateway's workers run on
