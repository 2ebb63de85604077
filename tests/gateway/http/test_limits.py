"""gateway.http.limits under the gateway's HTTP protocol on a real socket: slow heads and bodies
get 408 and a closed connection at their timeouts, answers that take long are not mistaken for
slow clients, and connections beyond the cap are closed on arrival, counted and logged once.

The many-connection case (2,000 slowloris connections against `gateway serve`) is
`test_slow_clients.py`.
"""

from __future__ import annotations

import asyncio
import queue
import select
import socket
import time
from collections.abc import Iterator

import pytest

from gateway.http.asgi import Receive, Scope, Send
from gateway.http.limits import STATE_KEY, ConnectionGuard, ConnectionLimits, raise_open_files
from tests.support.logs import messages_of
from tests.support.servers import ThreadedServer

LIMITS = ConnectionLimits(head_timeout=0.6, body_read_timeout=0.4, body_timeout=1.0)
HEAD = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n"
seen: queue.Queue[str] = queue.Queue()  # what the app saw of each request: its body or a leave


def serve_with(guard: ConnectionGuard) -> ThreadedServer:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            scope["state"][STATE_KEY] = guard  # how the gateway's app hands its limits over
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.put("left")
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.put(body.decode())
        if scope["path"] == "/sleep":
            await asyncio.sleep(1.5)  # longer than every timeout: the client is not slow
        length = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": body})

    return ThreadedServer(app, lifespan="on", timeout_keep_alive=1)


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[tuple[str, int], ConnectionGuard]]:
    guard = ConnectionGuard(LIMITS)
    with serve_with(guard) as running:
        host, port = running.url.removeprefix("http://").split(":")
        yield (host, int(port)), guard


def forget_seen() -> None:
    while not seen.empty():
        seen.get_nowait()


def closed_after(sock: socket.socket, started: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (s after `started`)."""
    sock.settimeout(5)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received, time.monotonic() - started


def trickle(sock: socket.socket, data: bytes, every: float) -> None:
    """Sends `data` a byte at a time until the server answers."""
    for byte in data:
        sock.sendall(bytes([byte]))
        if select.select([sock], [], [], every)[0]:
            return


def test_a_head_sent_too_slowly_gets_408_at_the_head_timeout(
    guarded: tuple[tuple[str, int], ConnectionGuard],
) -> None:
    address, guard = guarded
    before = guard.timed_out["head"]
    with socket.create_connection(address) as sock:
        started = time.monotonic()
        sock.sendall(HEAD[:5])
        trickle(sock, HEAD[5:25], every=0.1)  # bytes keep coming, never the whole head
        answer, took = closed_after(sock, started)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close\r\n" in answer
    assert LIMITS.head_timeout <= took < LIMITS.head_timeout + 1.0
    assert guard.timed_out["head"] == before + 1


def test_a_body_that_falls_silent_gets_408_and_the_app_sees_its_client_leave(
    guarded: tuple[tuple[str, int], ConnectionGuard],
) -> None:
    address, guard = guarded
    before = guard.timed_out["body_read"]
    forget_seen()
    with socket.create_connection(address) as sock:
        sock.sendall(HEAD + b"ab")
        started = time.monotonic()
        answer, took = closed_after(sock, started)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMITS.body_read_timeout <= took < LIMITS.body_read_timeout + 1.0
    assert guard.timed_out["body_read"] == before + 1
    assert seen.get(timeout=2) == "left"


def test_a_body_that_trickles_gets_408_at_the_body_timeout(
    guarded: tuple[tuple[str, int], ConnectionGuard],
) -> None:
    address, guard = guarded
    before = guard.timed_out["body"]
    forget_seen()
    head = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n"
    with socket.create_connection(address) as sock:
        sock.sendall(head)
        started = time.monotonic()
        trickle(sock, b"x" * 30, every=0.2)  # each byte within the read timeout
        answer, took = closed_after(sock, started)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMITS.body_timeout <= took < LIMITS.body_timeout + 1.0
    assert guard.timed_out["body"] == before + 1
    assert seen.get(timeout=2) == "left"


def test_an_answer_that_takes_long_is_not_a_slow_client(
    guarded: tuple[tuple[str, int], ConnectionGuard],
) -> None:
    address, _ = guarded
    request = b"POST /sleep HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"
    with socket.create_connection(address) as sock:
        sock.sendall(request + HEAD + b"again")  # the second waits its turn, read whole
        sock.settimeout(5)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2:
            received += sock.recv(4096)
    assert received.endswith(b"again")
    assert b" 408 " not in received


def test_a_silent_connection_is_closed_quietly_at_the_keep_alive_timeout(
    guarded: tuple[tuple[str, int], ConnectionGuard],
) -> None:
    address, guard = guarded
    timed_out = sum(guard.timed_out.values())
    with socket.create_connection(address) as sock:
        answer, took = closed_after(sock, time.monotonic())
    assert (answer, sum(guard.timed_out.values())) == (b"", timed_out)
    assert 0.9 < took < 3.0


@pytest.fixture
def server_log() -> Iterator[list[str]]:
    with messages_of("gateway.http") as lines:
        yield lines


def test_connections_past_the_cap_are_closed_on_arrival_counted_and_logged_once(
    server_log: list[str],
) -> None:
    guard = ConnectionGuard(ConnectionLimits(max_connections=5))
    with serve_with(guard) as running:
        host, port = running.url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port))) for _ in range(5)]
        extra = [socket.create_connection((host, int(port))) for _ in range(7)]
        try:
            for sock in extra:
                assert closed_after(sock, 0.0)[0] == b""  # closed before a byte was read
            for sock in held:  # the first five are served as usual
                sock.sendall(HEAD + b"hello")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
            assert (guard.refused, guard.open) == (7, 5)
        finally:
            for sock in held + extra:
                sock.close()
    refusals = [line for line in server_log if "refused at the cap" in line]
    assert len(refusals) == 1, server_log
    assert "1 refused at the cap of 5 per worker" in refusals[0]


def test_the_guard_logs_what_happened_since_its_last_line_once_per_interval(
    server_log: list[str],
) -> None:
    now = [100.0]
    guard = ConnectionGuard(ConnectionLimits(max_connections=1), clock=lambda: now[0])
    assert guard.admits()
    for _ in range(3):
        assert not guard.admits()
    guard.timed_out_in("head")
    now[0] += 10.0
    guard.timed_out_in("body")
    assert len(server_log) == 2
    assert "1 refused at the cap of 1 per worker" in server_log[0]
    assert "2 refused at the cap" in server_log[1]
    assert "2 closed for sending too slowly" in server_log[1]


def test_the_open_files_limit_is_raised_up_to_the_hard_limit_never_lowered() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_open_files(1) == (soft, hard)  # never lowered
        wanted = soft + 10 if hard == resource.RLIM_INFINITY else min(soft + 10, hard)
        assert raise_open_files(soft + 10) == (wanted, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
