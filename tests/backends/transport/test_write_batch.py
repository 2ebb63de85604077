"""backends.transport.write_batch: the first write of a turn leaves at once, later ones at the
turn's end, in order, and what is held for a transport that closed is dropped quietly; on real
sockets under both event loops the gateway may run on."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backends.transport.busy_poll import BusyPoll
from backends.transport.write_batch import MAX_HELD, WriteBatch, batch_of
from tests.support.loops import Scenario


@contextmanager
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    try:
        yield ours, peer
    finally:
        peer.close()


async def transport_on(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> asyncio.Transport:
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
    return transport


def waiting(peer: socket.socket) -> bytes:
    """What the peer can read right now, without waiting."""
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


def test_the_first_write_of_a_turn_leaves_at_once_the_rest_at_its_end(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        with pair() as (ours, peer):
            transport = await transport_on(loop, ours)
            batch = WriteBatch()
            batch.write(transport, b"first ")
            assert waiting(peer) == b"first "
            batch.write(transport, b"second ")
            batch.write(transport, b"third")
            assert waiting(peer) == b""
            await asyncio.sleep(0)  # the turn ends
            assert waiting(peer) == b"second third"
            batch.write(transport, b"next turn")  # a new turn's first write: at once again
            assert waiting(peer) == b"next turn"
            transport.close()

    run(scenario)


def test_held_writes_keep_their_order_on_each_transport(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        with pair() as (ours_a, peer_a), pair() as (ours_b, peer_b):
            a, b = await transport_on(loop, ours_a), await transport_on(loop, ours_b)
            batch = WriteBatch()
            for transport, data in [(a, b"a1"), (b, b"b1"), (a, b"a2"), (b, b"b2"), (a, b"a3")]:
                batch.write(transport, data)
            await asyncio.sleep(0)
            assert (waiting(peer_a), waiting(peer_b)) == (b"a1a2a3", b"b1b2")
            a.close()
            b.close()

    run(scenario)


def test_flush_sends_what_is_held_before_a_close(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        with pair() as (ours, peer):
            transport = await transport_on(loop, ours)
            batch = WriteBatch()
            batch.write(transport, b"answer ")
            batch.write(transport, b"and its end")
            batch.flush()
            transport.close()
            await asyncio.sleep(0.05)
            assert waiting(peer) == b"answer and its end"
            assert peer.recv(1) == b""  # then the close

    run(scenario)


def test_a_write_held_for_a_transport_that_closed_is_dropped(
    run: Callable[[Scenario], None],
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        with pair() as (ours_a, peer_a), pair() as (ours_b, peer_b):
            a, b = await transport_on(loop, ours_a), await transport_on(loop, ours_b)
            batch = WriteBatch()
            batch.write(a, b"to a")
            batch.write(b, b"to b, who leaves")
            b.close()  # a peer reset, or a call abandoned in the same turn
            await asyncio.sleep(0.05)
            assert waiting(peer_a) == b"to a"
            assert peer_b.recv(64) == b""  # the close alone
            a.close()

    run(scenario)


def test_each_loop_has_one_batch(run: Callable[[Scenario], None]) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        assert batch_of(loop) is batch_of(loop)
        other = asyncio.new_event_loop()
        try:
            assert batch_of(other) is not batch_of(loop)
        finally:
            other.close()

    run(scenario)


def test_a_batch_does_not_keep_its_loop_alive() -> None:
    """The batches are kept by loop, weakly: a batch (and the busy poll it holds) must not
    refer to its loop, or every loop a process ever ran would stay in memory."""

    async def scenario() -> None:
        poll = batch_of(asyncio.get_running_loop()).busy_poll = BusyPoll(0.001)
        poll.arm()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(scenario())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


def test_past_max_held_bytes_the_held_writes_leave_at_once(run: Callable[[Scenario], None]) -> None:
    """So a transport's flow control still sees a fast sender: its buffer fills, it pauses."""

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        with pair() as (ours, peer):
            transport = await transport_on(loop, ours)
            batch = WriteBatch()
            batch.write(transport, b"first")
            assert waiting(peer) == b"first"
            batch.write(transport, b"x" * MAX_HELD)
            assert waiting(peer) == b""  # held: not past the bound yet
            batch.write(transport, b"y")
            received = b""
            while chunk := waiting(peer):
                received += chunk
            assert received == b"x" * MAX_HELD + b"y"
            transport.close()

    run(scenario)
