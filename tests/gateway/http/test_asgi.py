"""gateway.http.asgi.until_disconnect under a server that signals disconnects itself (the gateway's
`Cycle`) and under any other ASGI server (a watcher on `receive`): the work is cancelled when
the client leaves, and only then is `ClientDisconnected` raised."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.http.asgi import WATCH_AFTER, ClientDisconnected, Message, until_disconnect


class SignallingServer:
    """What until_disconnect asks of the gateway's `Cycle`: `watch_disconnect` and
    `disconnected`, with `receive` a method of the same object."""

    def __init__(self) -> None:
        self.disconnected = False
        self.watcher: asyncio.Task[Any] | None = None

    def watch_disconnect(self, task: asyncio.Task[Any] | None) -> None:
        self.watcher = task
        if task is not None and self.disconnected:
            task.cancel()

    def client_left(self) -> None:
        self.disconnected = True
        if self.watcher is not None:
            self.watcher.cancel()

    async def receive(self) -> Message:
        raise AssertionError("a signalling server is never asked")


def other_server_receive(leaves_after: float | None) -> Any:
    async def receive() -> Message:
        if leaves_after is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(leaves_after)
        return {"type": "http.disconnect"}

    return receive


async def slow(seconds: float = 30.0) -> str:
    await asyncio.sleep(seconds)
    return "done"


def test_work_that_ends_returns_its_value_under_both_kinds_of_server() -> None:
    async def scenario() -> None:
        server = SignallingServer()
        assert await until_disconnect(slow(0.01), server.receive) == "done"
        assert server.watcher is None  # not watched after the work
        assert await until_disconnect(slow(0.05), other_server_receive(None)) == "done"
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == 1  # no watcher left behind

    asyncio.run(scenario())


def test_a_signalled_disconnect_cancels_the_work_at_once() -> None:
    async def scenario() -> None:
        server = SignallingServer()
        asyncio.get_running_loop().call_later(0.01, server.client_left)
        started = time.monotonic()
        with pytest.raises(ClientDisconnected):
            await until_disconnect(slow(), server.receive)
        assert time.monotonic() - started < WATCH_AFTER + 0.5

    asyncio.run(scenario())


def test_a_client_gone_before_the_work_starts_cancels_it_at_once() -> None:
    async def scenario() -> None:
        server = SignallingServer()
        server.client_left()
        with pytest.raises(ClientDisconnected):
            await until_disconnect(slow(), server.receive)

    asyncio.run(scenario())


def test_under_another_server_a_watcher_on_receive_sees_the_disconnect() -> None:
    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(ClientDisconnected):
            await until_disconnect(slow(), other_server_receive(0.1))
        assert time.monotonic() - started < 5

    asyncio.run(scenario())


@pytest.mark.parametrize("signalling", [True, False])
def test_a_cancel_from_elsewhere_stays_a_cancel(signalling: bool) -> None:
    async def scenario() -> None:
        receive = SignallingServer().receive if signalling else other_server_receive(None)
        task = asyncio.ensure_future(until_disconnect(slow(), receive))
        await asyncio.sleep(WATCH_AFTER * 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
