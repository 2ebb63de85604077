"""backends.transport.http1 against real servers: uvicorn (the fake upstream) for what an engine's
server sends, and a scripted asyncio server in the test's loop for byte-level cases (framing,
resets, stalls, garbage) that uvicorn will not produce on demand. Every case runs on asyncio and
uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import pytest
import uvloop

from backends import vllm
from backends.base import Route, UpstreamRequest
from backends.transport.connection import HIGH_WATER
from backends.transport.http1 import (
    ConnectFailed,
    ConnectTimeout,
    DisconnectedBeforeStatus,
    Pool,
    ProtocolError,
    ReadTimeout,
    TotalTimeout,
    encode_headers,
    header_line,
)
from backends.vllm import VllmSettings
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer

Run = Callable[[Coroutine[Any, Any, None]], None]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Step = Callable[[Streams], Awaitable[bool]]  # False: close the connection after

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
END = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def send(*parts: bytes, keep: bool = True, pause: float = 0.0) -> Step:
    async def step(streams: Streams) -> bool:
        writer = streams[1]
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        return keep

    return step


def reset(streams: Streams) -> Awaitable[bool]:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    linger = struct.pack("ii", 1, 0)
    streams[1].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    return send(keep=False)(streams)


def stall(*parts: bytes) -> Step:
    """Sends `parts`, then nothing until the client hangs up."""

    async def step(streams: Streams) -> bool:
        await send(*parts)(streams)
        await streams[0].read()
        return False

    return step


class Scripted:
    """An HTTP server in the test's loop: each request, read whole, gets the next step."""

    def __init__(self, *steps: Step) -> None:
        self.steps = deque(steps)
        self.connections = 0
        self.ended = 0  # connections the client closed or the script ended
        self.requests: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                if not await self.steps.popleft()((reader, writer)):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended += 1
            writer.close()


def pool_for(url: str, **overrides: Any) -> Pool:
    settings: dict[str, Any] = {"limit": 8, "keepalive": 30.0, "connect_timeout": 1.0}
    settings |= {"read_timeout": 1.0, "total_timeout": 5.0}
    return Pool(url, **(settings | overrides))


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 2 s")


async def call(pool: Pool, stream: bool) -> None:
    """One POST, its answer read whole, as a stream or not."""
    if not stream:
        await pool.fetch(pool.head("POST", "/"), b"{}")
        return
    response = await pool.open(pool.head("POST", "/"), b"{}")
    while await response.next_chunk() is not None:
        pass
    response.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    def run(scenario: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(10):
                await scenario

        if request.param == "uvloop":
            uvloop.run(bounded())
        else:
            asyncio.run(bounded())

    return run


def test_content_length_answers_reuse_one_connection(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(OK), send(OK)) as server:
            pool = pool_for(server.url + "/prefix")
            head = pool.head("POST", "/v1/x", {"content-type": "application/json"})
            for index in range(2):
                answer = await pool.fetch(head, b'{"a":1}', {"x-request-id": f"r{index}"})
                assert (answer.status, answer.body) == (200, b"{}")
                assert answer.headers["content-type"] == "application/json"
            await pool.close()
            await eventually(lambda: server.ended == 1)
        assert server.connections == 1
        port = server.url.rsplit(":", 1)[1]
        assert server.requests[1] == (
            b"POST /prefix/v1/x HTTP/1.1\r\nhost: 127.0.0.1:%s\r\ncontent-type: application/json"
            b'\r\ncontent-length: 7\r\nx-request-id: r1\r\n\r\n{"a":1}' % port.encode()
        )

    run(scenario())


def test_a_chunked_stream_yields_each_piece_as_it_arrives(run: Run) -> None:
    async def scenario() -> None:
        more = asyncio.Event()

        async def paced(streams: Streams) -> bool:
            streams[1].write(CHUNKED + chunk(b"data: 1\n\n"))
            await more.wait()
            streams[1].write(chunk(b"data: 2\n\n") + END)
            return True

        async with Scripted(paced, send(OK)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert await response.next_chunk() == b"data: 1\n\n"  # before the rest was sent
            more.set()
            assert await response.next_chunk() == b"data: 2\n\n"
            assert await response.next_chunk() is None
            response.close()
            assert (await pool.fetch(pool.head("GET", "/"))).body == b"{}"
            await pool.close()
        assert server.connections == 1

    run(scenario())


def test_connection_close_answers_are_read_and_never_reused(run: Run) -> None:
    closing = OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    unframed = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"

    async def scenario() -> None:
        async with Scripted(send(closing, keep=False), send(unframed, keep=False)) as server:
            pool = pool_for(server.url)
            assert (await pool.fetch(pool.head("GET", "/"))).body == b"{}"
            assert (await pool.fetch(pool.head("GET", "/"))).body == b"until the end"
            await pool.close()
        assert server.connections == 2

    run(scenario())


def test_a_server_closing_an_idle_connection_is_noticed(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(OK, keep=False), send(OK)) as server:
            pool = pool_for(server.url)
            await pool.fetch(pool.head("GET", "/"))
            await eventually(lambda: server.ended == 1)
            await asyncio.sleep(0.05)  # the FIN reaches the client
            assert (await pool.fetch(pool.head("GET", "/"))).status == 200
            await pool.close()
        assert server.connections == 2

    run(scenario())


@pytest.mark.parametrize("hang_up", [send(keep=False), reset], ids=["closed", "reset"])
def test_a_hang_up_before_the_status_line_is_safe_to_retry(run: Run, hang_up: Step) -> None:
    async def scenario() -> None:
        async with Scripted(hang_up) as server:
            pool = pool_for(server.url)
            with pytest.raises(DisconnectedBeforeStatus):
                await pool.fetch(pool.head("POST", "/"), b"{}")
            await pool.close()

    run(scenario())


@pytest.mark.parametrize("hang_up", [send(keep=False), reset], ids=["closed", "reset"])
@pytest.mark.parametrize("stream", [False, True], ids=["fetch", "open"])
def test_a_kept_alive_connection_closed_under_a_request_is_retried_once_on_a_new_one(
    run: Run, hang_up: Step, stream: bool
) -> None:
    """The server's idle timeout can close a pooled connection as a request goes out: nothing
    was read, so the pool sends it again on a new connection, once; a new connection that
    fails the same way is the caller's to handle."""

    async def scenario() -> None:
        answer = CHUNKED + chunk(b"data: 1\n\n") + END if stream else OK
        async with Scripted(send(OK), hang_up, send(answer), send(OK, keep=False)) as server:
            pool = pool_for(server.url)
            await call(pool, stream=False)  # opens the connection, leaves it idle in the pool
            await call(pool, stream)  # closed under it: sent again on a second connection
            assert server.connections == 2
            assert len(server.requests) == 3
            await pool.close()
        async with Scripted(hang_up) as server:
            pool = pool_for(server.url)
            with pytest.raises(DisconnectedBeforeStatus):  # a new connection: not retried
                await call(pool, stream)
            assert len(server.requests) == 1
            await pool.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        OK.replace(b"length: 2", b"length: 20"),
        CHUNKED + chunk(b"data: 1\n\n"),
        CHUNKED + b"zz\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    ],
    ids=["short-body", "cut-stream", "bad-chunk", "not-http"],
)
def test_malformed_or_cut_answers_are_protocol_errors(run: Run, answer: bytes) -> None:
    async def scenario() -> None:
        async with Scripted(send(answer, keep=False), send(OK)) as server:
            pool = pool_for(server.url)
            with pytest.raises(ProtocolError):
                await pool.fetch(pool.head("POST", "/"), b"{}")
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()
        assert server.connections == 2

    run(scenario())


def test_an_unasked_second_answer_drops_the_connection(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(OK + OK), send(OK)) as server:
            pool = pool_for(server.url)
            assert (await pool.fetch(pool.head("GET", "/"))).body == b"{}"
            assert (await pool.fetch(pool.head("GET", "/"))).body == b"{}"
            await pool.close()
        assert server.connections == 2

    run(scenario())


def test_an_interim_1xx_answer_is_skipped(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as server:
            pool = pool_for(server.url)
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()

    run(scenario())


@pytest.mark.parametrize(
    ("step", "stream", "error"),
    [
        (stall(), False, ReadTimeout),
        (stall(OK.replace(b"length: 2", b"length: 20")), False, ReadTimeout),
        (stall(CHUNKED + chunk(b"data: 1\n\n")), True, ReadTimeout),
        (send(CHUNKED, *[chunk(b".")] * 50, pause=0.05), True, TotalTimeout),
    ],
    ids=["before-status", "mid-body", "mid-stream", "trickle"],
)
def test_timeouts_are_distinct_and_drop_the_connection(
    run: Run, step: Step, stream: bool, error: type[Exception]
) -> None:
    async def scenario() -> None:
        async with Scripted(step) as server:
            pool = pool_for(server.url, read_timeout=0.2, total_timeout=0.6)
            started = time.monotonic()
            with pytest.raises(error):
                await call(pool, stream)
            assert time.monotonic() - started < 1.0
            await eventually(lambda: server.ended == 1)
            await pool.close()

    run(scenario())


def test_connect_failures(run: Run) -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{probe.getsockname()[1]}"
        pool = pool_for(refused)
        with pytest.raises(ConnectFailed):
            await pool.fetch(pool.head("GET", "/"))
        # A full accept queue: Linux drops the next SYN, so the connect hangs.
        with socket.socket() as listener, socket.socket() as queued:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            queued.connect(listener.getsockname())
            pool = pool_for(f"http://127.0.0.1:{listener.getsockname()[1]}", connect_timeout=0.2)
            with pytest.raises(ConnectTimeout):
                await pool.fetch(pool.head("GET", "/"))

    run(scenario())


def test_the_limit_queues_calls_on_one_connection(run: Run) -> None:
    async def scenario() -> None:
        steps = [send(OK, pause=0.05) for _ in range(3)]
        async with Scripted(*steps, stall()) as server:
            pool = pool_for(server.url, limit=1)
            head = pool.head("GET", "/")
            answers = await asyncio.gather(*(pool.fetch(head) for _ in range(3)))
            assert [answer.status for answer in answers] == [200, 200, 200]
            blocked = asyncio.ensure_future(pool.fetch(head))
            await asyncio.sleep(0.05)
            with pytest.raises(TotalTimeout):
                await pool.fetch(head, total=0.1)  # waits for the one connection, in vain
            blocked.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await blocked
            await pool.close()
        assert server.connections == 1

    run(scenario())


def test_idle_connections_close_after_keepalive(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(OK), send(OK)) as server:
            pool = pool_for(server.url, keepalive=0.1)
            await pool.fetch(pool.head("GET", "/"))
            await eventually(lambda: server.ended == 1)
            await pool.fetch(pool.head("GET", "/"))
            await pool.close()
        assert server.connections == 2

    run(scenario())


def test_closing_a_stream_early_closes_its_connection(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(stall(CHUNKED + chunk(b"data: 1\n\n")), send(OK)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            assert await response.next_chunk() == b"data: 1\n\n"
            response.close()
            await eventually(lambda: server.ended == 1)  # the server sees the client leave
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()
        assert server.connections == 2

    run(scenario())


def test_a_cancelled_call_closes_its_connection(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(stall(), send(OK)) as server:
            pool = pool_for(server.url)
            call = asyncio.ensure_future(pool.fetch(pool.head("POST", "/"), b"{}"))
            await eventually(lambda: len(server.requests) == 1)
            call.cancel()
            await eventually(lambda: server.ended == 1)
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()
        assert server.connections == 2

    run(scenario())


def test_a_slow_reader_pauses_the_socket_and_loses_nothing(run: Run) -> None:
    pieces = [bytes([65 + index % 26]) * 16_384 for index in range(4 * HIGH_WATER // 16_384)]

    async def scenario() -> None:
        async with Scripted(send(CHUNKED, *map(chunk, pieces), END)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received = [await response.next_chunk() or b""]
            await asyncio.sleep(0.1)  # the server fills the buffers meanwhile
            while (piece := await response.next_chunk()) is not None:
                received.append(piece)
            response.close()
            assert b"".join(received) == b"".join(pieces)
            await pool.close()

    run(scenario())


def test_header_values_cannot_smuggle_headers() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        encode_headers({"x-request-id": "a\r\nx-admin: 1"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-request-id", "a\r\nx-admin: 1"), ("x-request-id", "a\nb"), ("x-request-id", "a\r"),
     ("x-admin: 1\r\nx-request-id", "a"), ("x\nid", "a")],
)  # fmt: skip
def test_a_single_header_line_cannot_smuggle_headers_either(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        header_line(name, value)


def test_a_calls_own_header_goes_out_the_same_encoded_or_as_a_mapping(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(OK), send(OK), send(OK)) as server:
            pool = pool_for(server.url)
            head = pool.head("POST", "/v1/x", {"content-type": "application/json"})
            line = header_line("x-request-id", "r1")
            assert line == encode_headers({"x-request-id": "r1"}) == b"x-request-id: r1\r\n"
            await pool.fetch(head, b"{}", {"x-request-id": "r1"})
            await pool.fetch(head, b"{}", line)
            response = await pool.open(head, b"{}", line)
            assert await response.read() == b"{}"
            await pool.close()
        assert server.requests[0] == server.requests[1] == server.requests[2]
        assert b"\r\nx-request-id: r1\r\n\r\n{}" in server.requests[0]

    run(scenario())


def test_an_answer_cannot_be_changed(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(OK)) as server:
            pool = pool_for(server.url)
            answer = await pool.fetch(pool.head("GET", "/"))
            with pytest.raises(AttributeError):
                answer.status = 500  # type: ignore[misc]
            await pool.close()

    run(scenario())


@pytest.fixture(scope="module")
def uvicorn_upstream(fake_upstream: tuple[FakeUpstream, ThreadedServer]) -> str:
    return fake_upstream[1].url


def test_against_uvicorn_completion_stream_and_gets(run: Run, uvicorn_upstream: str) -> None:
    def ask(cue: str, stream: bool) -> bytes:
        message = {"role": "user", "content": cue}
        return orjson.dumps({"model": MODEL, "messages": [message], "stream": stream})

    async def scenario() -> None:
        pool = pool_for(uvicorn_upstream)
        head = pool.head("POST", "/v1/chat/completions", {"content-type": "application/json"})
        answer = await pool.fetch(head, ask("hi", False))
        assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "hello from fake"
        response = await pool.open(head, ask("hi", True))
        pieces = []
        while (piece := await response.next_chunk()) is not None:
            pieces.append(piece)
        response.close()
        assert b"".join(pieces).count(b"data: ") == 4  # three chunks and [DONE]
        models = await pool.fetch(pool.head("GET", "/v1/models"))
        assert orjson.loads(models.body)["data"][0]["id"] == MODEL
        assert (await pool.fetch(pool.head("GET", "/health"))).status == 200
        await pool.close()

    run(scenario())


def test_against_uvicorn_an_early_close_stops_the_generation(
    run: Run, fake_upstream: tuple[FakeUpstream, ThreadedServer]
) -> None:
    app, server = fake_upstream
    before = app.cancelled
    body = {"model": MODEL, "messages": [{"role": "user", "content": "long:500"}], "stream": True}

    async def scenario() -> None:
        pool = pool_for(server.url)
        response = await pool.open(pool.head("POST", "/v1/chat/completions"), orjson.dumps(body))
        for _ in range(3):
            assert await response.next_chunk()
        response.close()
        await eventually(lambda: app.cancelled == before + 1)
        await pool.close()

    run(scenario())


def test_a_response_dropped_unclosed_frees_its_place(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(stall(CHUNKED), send(OK)) as server:
            pool = pool_for(server.url, limit=1)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            del response  # a caller cancelled between getting it and closing it
            await eventually(lambda: server.ended == 1)
            assert (await pool.fetch(pool.head("POST", "/"), b"{}", total=1.0)).status == 200
            await pool.close()

    run(scenario())


def test_a_backend_stream_closed_before_its_first_event_stops_the_generation(
    run: Run, fake_upstream: tuple[FakeUpstream, ThreadedServer]
) -> None:
    app, server = fake_upstream
    before = app.cancelled
    body = {"model": MODEL, "messages": [{"role": "user", "content": "long:500"}], "stream": True}

    async def scenario() -> None:
        backend = vllm.create("vllm", VllmSettings(url=server.url, model=MODEL))
        request = UpstreamRequest(Route.CHAT, orjson.dumps(body), body, MODEL, "r1", True)
        events = await backend.stream(request)
        await events.aclose()  # never iterated: the generator's own cleanup never runs
        await eventually(lambda: app.cancelled == before + 1)
        await backend.close()

    run(scenario())


def into(received: list[bytes]) -> Callable[[bytes], bool]:
    """A sink that takes every piece."""

    def sink(piece: bytes) -> bool:
        received.append(piece)
        return True

    return sink


def test_a_piped_stream_hands_each_piece_on_as_it_arrives(run: Run) -> None:
    pieces = [b"data: %d\n\n" % index for index in range(5)]

    async def scenario() -> None:
        # The first piece comes with the headers, so it is read before the pipe starts.
        script = send(CHUNKED + chunk(pieces[0]), *map(chunk, pieces[1:]), END, pause=0.02)
        async with Scripted(script, send(OK)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received: list[bytes] = []
            assert await response.pipe(into(received))
            assert received == pieces
            response.close()
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()
        assert server.connections == 1  # read to its end: the connection was kept

    run(scenario())


def test_what_one_read_brings_reaches_the_sink_in_one_call(run: Run) -> None:
    async def scenario() -> None:
        # The last event, [DONE] and the body's end in one write, as an engine ends a stream.
        last = chunk(b"data: 1\n\n") + chunk(b"data: [DONE]\n\n") + END
        async with Scripted(send(CHUNKED + chunk(b"data: 0\n\n"), last, pause=0.05)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received: list[bytes] = []
            assert await response.pipe(into(received))
            assert received == [b"data: 0\n\n", b"data: 1\n\ndata: [DONE]\n\n"]
            response.close()
            await pool.close()

    run(scenario())


def test_a_refusing_sink_pauses_reading_loses_nothing_and_never_times_out(run: Run) -> None:
    pieces = [bytes([65 + index % 26]) * 16_384 for index in range(4 * HIGH_WATER // 16_384)]

    async def scenario() -> None:
        async with Scripted(send(CHUNKED, *map(chunk, pieces), END, pause=0.01)) as server:
            pool = pool_for(server.url, read_timeout=0.2)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            transport = response._conn.transport if response._conn else None
            assert transport is not None
            received: list[bytes] = []

            def sink(piece: bytes) -> bool:
                received.append(piece)
                return False  # each read: no more for now

            assert not await response.pipe(sink)
            assert not transport.is_reading()  # held: the server's bytes wait in its socket
            rounds = 1
            while not await response.pipe(sink):
                rounds += 1
                await asyncio.sleep(0.3)  # longer than the read timeout: the reader is slow
            assert rounds >= 2  # held at least once for longer than the read timeout
            assert b"".join(received) == b"".join(pieces)
            response.close()
            await pool.close()

    run(scenario())


def test_an_answer_ended_in_a_refused_read_leaves_its_connection_reading(run: Run) -> None:
    # The sink refuses the read that also ends the answer (its client left, or is slow): the
    # connection is whole and kept, so the next call on it must have its answer read.
    async def scenario() -> None:
        last = chunk(b"data: 1\n\n") + END
        async with Scripted(
            send(CHUNKED + chunk(b"data: 0\n\n"), last, pause=0.05), send(OK)
        ) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received: list[bytes] = []

            def sink(piece: bytes) -> bool:
                received.append(piece)
                return False

            while not await response.pipe(sink):
                pass
            assert received == [b"data: 0\n\n", b"data: 1\n\n"]
            response.close()
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()
        assert server.connections == 1  # read to its end: the connection was kept

    run(scenario())


def test_a_pipe_raises_what_reading_would_after_the_pieces_before(run: Run) -> None:
    async def scenario() -> None:
        async with Scripted(send(CHUNKED + chunk(b"data: 1\n\n"), b"zz\r\n", keep=False)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received: list[bytes] = []
            with pytest.raises(ProtocolError):
                await response.pipe(into(received))
            assert received == [b"data: 1\n\n"]
            response.close()
            await pool.close()

    run(scenario())


FIRST = CHUNKED + chunk(b"data: 0\n\n")


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (stall(FIRST, chunk(b"data: 1\n\n")), ReadTimeout),
        (send(FIRST, *[chunk(b"data: 1\n\n")] * 50, pause=0.05), TotalTimeout),
        (send(FIRST, chunk(b"data: 1\n\n"), keep=False), ProtocolError),
    ],
    ids=["silent", "trickle", "cut"],
)
def test_a_piped_stream_times_out_or_fails_as_a_read_one_would(
    run: Run, step: Step, error: type[Exception]
) -> None:
    # A piped reader is never paused here (the sink takes all), so a silent server is silent.
    async def scenario() -> None:
        async with Scripted(step) as server:
            pool = pool_for(server.url, read_timeout=0.2, total_timeout=0.6)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received: list[bytes] = []
            started = time.monotonic()
            with pytest.raises(error):
                await response.pipe(into(received))
            assert time.monotonic() - started < 1.0
            assert received[:2] == [b"data: 0\n\n", b"data: 1\n\n"]
            response.close()
            await eventually(lambda: server.ended == 1)  # the connection is dropped
            await pool.close()

    run(scenario())


def test_a_cancelled_pipe_hands_on_nothing_more_and_its_connection_is_closed(run: Run) -> None:
    async def scenario() -> None:
        script = send(CHUNKED + chunk(b"data: 0\n\n"), *[chunk(b"data: 1\n\n")] * 20, pause=0.02)
        async with Scripted(script, send(OK)) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received: list[bytes] = []
            piping = asyncio.ensure_future(response.pipe(into(received)))
            await eventually(lambda: len(received) >= 3)
            piping.cancel()  # as a client's disconnect cancels the relay's task
            with pytest.raises(asyncio.CancelledError):
                await piping
            kept = len(received)
            await asyncio.sleep(0.1)  # the server goes on sending meanwhile
            assert len(received) == kept
            response.close()
            await eventually(lambda: server.ended == 1)
            assert (await pool.fetch(pool.head("POST", "/"), b"{}")).status == 200
            await pool.close()
        assert server.connections == 2  # not read to its end: never reused

    run(scenario())


def test_a_stream_can_be_read_piece_by_piece_then_piped(run: Run) -> None:
    pieces = [b"data: %d\n\n" % index for index in range(6)]

    async def scenario() -> None:
        script = send(CHUNKED, *map(chunk, pieces), END, pause=0.02)
        async with Scripted(script) as server:
            pool = pool_for(server.url)
            response = await pool.open(pool.head("POST", "/"), b"{}")
            received = [await response.next_chunk() or b"", await response.next_chunk() or b""]
            await asyncio.sleep(0.05)  # more pieces wait in the answer's buffer meanwhile
            assert await response.pipe(into(received))
            assert received == pieces
            assert await response.next_chunk() is None
            response.close()
            await pool.close()

    run(scenario())
