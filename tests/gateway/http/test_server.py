"""gateway.http.server, the HTTP/1.1 protocol `gateway serve` runs, under uvicorn on a real socket:
framing, keep-alive, pipelining, flow control and failures, seen byte for byte by a raw client.

The gateway's own behaviour over this protocol is what the rest of the suite tests; this file
covers what a plain ASGI app can provoke on demand.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from gateway.http.asgi import Receive, Scope, Send, body_writer
from gateway.http.server import MAX_HEAD, HTTPProtocol
from tests.support.logs import messages_of
from tests.support.servers import ThreadedServer

SECRET = "con tên là Bống"
BIG_CHUNK = 256 * 1024
BIG_CHUNKS = 200  # 50 MiB: far more than the socket buffers hold
events: queue.Queue[str] = queue.Queue()
sent_chunks = [0]


async def read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def answer(send: Send, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": 200, "headers": length + (headers or [])}
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    if path == "/echo":
        await answer(send, await read_all(receive))
    elif path == "/slow":
        await asyncio.sleep(0.3)
        await answer(send, b"slow")
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream-slow-first":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"late"})
    elif path == "/written-to-the-end":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        writer = body_writer(send)
        assert writer is not None
        writer.write_body(b"one ")
        writer.write_body(b"last", last=True)  # no ASGI message ends this body
    elif path == "/fail-before":
        raise ValueError(SECRET)
    elif path == "/fail-mid-stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError(SECRET)
    elif path == "/bad-header":
        await answer(send, b"x", [(b"x-smuggled", b"a\r\nset-cookie: b")])
    elif path == "/wait-for-disconnect":
        await read_all(receive)
        events.put((await receive())["type"])
    elif path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(BIG_CHUNKS):
            await send({"type": "http.response.body", "body": b"x" * BIG_CHUNK, "more_body": True})
            sent_chunks[0] += 1
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with ThreadedServer(app, lifespan="off", timeout_keep_alive=1) as running:
        host, port = running.url.removeprefix("http://").split(":")
        yield host, int(port)


def connect(server: tuple[str, int]) -> socket.socket:
    return socket.create_connection(server, timeout=5)


def request(path: str, body: bytes = b"", method: str = "POST", version: str = "1.1") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nhost: test\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def read_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One response off the stream: status, headers, body (Content-Length, chunked or close)."""
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, stream.read(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(stream.readline(), 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
        return status, headers, body
    return status, headers, stream.read()


def test_requests_on_one_connection_are_answered_in_turn(server: tuple[str, int]) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        for body in (b"first", b"second", b""):
            sock.sendall(request("/echo", body))
            status, headers, answer = read_response(stream)
            assert (status, answer) == (200, body)
            assert "connection" not in headers
            assert headers["date"]


def test_pipelined_requests_are_answered_in_order(server: tuple[str, int]) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/slow") + request("/echo", b"after") + request("/echo", b"last"))
        assert [read_response(stream)[2] for _ in range(3)] == [b"slow", b"after", b"last"]


def test_a_chunked_request_body_arrives_whole(server: tuple[str, int]) -> None:
    head = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(head + b"5\r\nhello\r\n")
        time.sleep(0.05)
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        assert read_response(stream)[2] == b"hello world"


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: tuple[str, int]) -> None:
    head = b"POST /echo HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n"
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(head)
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(b"body")
        assert read_response(stream)[2] == b"body"


def test_head_gets_the_headers_and_no_body(server: tuple[str, int]) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/echo", b"hello", method="HEAD") + request("/echo", b"next"))
        status = stream.readline()
        headers = []
        while (line := stream.readline()) != b"\r\n":
            headers.append(line)
        assert status.startswith(b"HTTP/1.1 200")
        assert b"content-length: 5\r\n" in headers
        assert read_response(stream)[2] == b"next"  # no stray body before the next answer


def test_a_stream_is_chunked_for_http_1_1(server: tuple[str, int]) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/stream") + request("/echo", b"still open"))
        status, headers, body = read_response(stream)
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"one two three")
        assert read_response(stream)[2] == b"still open"


def test_a_stream_to_an_http_1_0_client_ends_with_the_connection(server: tuple[str, int]) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/stream", version="1.0"))
        status, headers, body = read_response(stream)
        assert "transfer-encoding" not in headers  # HTTP/1.0 knows no chunks
        assert (status, headers["connection"], body) == (200, "close", b"one two three")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nx-big: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n", 431),
    ],
    ids=["not-http", "headers-too-large", "url-too-large"],
)
def test_a_request_that_cannot_be_read_is_refused_and_closed(
    server: tuple[str, int], data: bytes, status: int
) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(data)
        answer_status, headers, body = read_response(stream)
        assert (answer_status, headers["connection"]) == (status, "close")
        assert body
        assert stream.read() == b""  # closed


@pytest.fixture
def server_log() -> Iterator[list[str]]:
    with messages_of("uvicorn.error") as lines:
        yield lines


def test_an_app_error_before_the_response_is_a_500_logged_without_its_message(
    server: tuple[str, int], server_log: list[str]
) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/fail-before"))
        status, headers, body = read_response(stream)
    assert (status, body, headers["connection"]) == (500, b"Internal Server Error", "close")
    logged = "\n".join(server_log)
    assert "ValueError" in logged
    assert "in app" in logged
    assert SECRET not in logged


def test_an_app_error_mid_stream_cuts_the_connection(server: tuple[str, int]) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/fail-mid-stream"))
        assert stream.readline().startswith(b"HTTP/1.1 200")
        while stream.readline() != b"\r\n":
            pass
        # The partial chunk, then the end of the connection without the last (empty) chunk:
        # the client can tell a cut answer from a complete one.
        assert stream.read() == b"7\r\npartial\r\n"


def test_a_header_that_could_smuggle_another_is_refused_with_a_500(
    server: tuple[str, int],
) -> None:
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/bad-header"))
        status, headers, _ = read_response(stream)
    assert status == 500
    assert "set-cookie" not in headers
    assert "x-smuggled" not in headers


def test_receive_tells_the_app_when_its_client_leaves(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        sock.sendall(request("/wait-for-disconnect", b"body"))
        time.sleep(0.1)
    assert events.get(timeout=5) == "http.disconnect"


def test_a_silent_connection_is_closed_after_the_keep_alive_timeout(
    server: tuple[str, int],
) -> None:
    with connect(server) as idle, connect(server) as silent, idle.makefile("rb") as stream:
        idle.sendall(request("/echo", b"x"))
        assert read_response(stream)[2] == b"x"
        started = time.monotonic()
        assert stream.read() == b""  # after an answer: closed without a word
        assert silent.recv(1) == b""  # opened and never used: the same
        assert 0.9 < time.monotonic() - started < 4  # the timeout is 1 s


def test_a_client_that_stops_reading_stops_the_sender(server: tuple[str, int]) -> None:
    sent_chunks[0] = 0
    with connect(server) as sock, sock.makefile("rb") as stream:
        sock.sendall(request("/big"))
        time.sleep(1.0)
        held = sent_chunks[0]
        assert held < BIG_CHUNKS // 2  # the app waits instead of buffering 50 MiB
        assert len(read_response(stream)[2]) == BIG_CHUNK * BIG_CHUNKS
    assert sent_chunks[0] == BIG_CHUNKS


class RecordingTransport(asyncio.Transport):
    """Counts writes, which a real socket cannot show: a test of the one-write claim."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def writes_for(path: str, settle: float = 0.0) -> list[bytes]:
    """The transport writes of one request's answer, and when each came (after `settle` s)."""
    import uvicorn
    from uvicorn.server import ServerState

    async def scenario() -> list[bytes]:
        protocol = HTTPProtocol(uvicorn.Config(app, lifespan="off"), ServerState(), {})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request(path, b"hello"))
        for _ in range(10):
            await asyncio.sleep(0)
        writes = list(transport.writes)
        await asyncio.sleep(settle)
        protocol.connection_lost(None)
        return writes if not settle else [*writes, b"--", *transport.writes[len(writes) :]]

    return asyncio.run(scenario())


def test_a_response_with_a_length_leaves_in_one_write() -> None:
    writes = writes_for("/echo")
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\nhello")


def test_a_stream_head_joins_its_first_event_when_that_is_ready() -> None:
    writes = writes_for("/stream")
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n4\r\none \r\n")


def test_a_stream_head_does_not_wait_for_a_slow_first_event() -> None:
    writes = writes_for("/stream-slow-first", settle=0.2)
    head, marker, *later = writes
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")  # sent before the event
    assert marker == b"--"
    assert later == [b"4\r\nlate\r\n0\r\n\r\n"]


def test_a_body_written_to_its_end_leaves_its_last_piece_and_end_in_one_write() -> None:
    writes = writes_for("/written-to-the-end")
    assert writes[0].endswith(b"\r\n\r\n4\r\none \r\n")  # the head, with the first piece
    assert writes[1:] == [b"4\r\nlast\r\n0\r\n\r\n"]
