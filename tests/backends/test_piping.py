"""backends.piping: a stream that can be piped is piped; one that cannot is pulled, with the same
contract (a refusal stops the hand-over, the next call goes on where it stopped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from backends.errors import BackendProtocolError
from backends.openai_shapes import Events
from backends.piping import Deliver, pipe


async def events(*chunks: bytes, fail: bool = False) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk
    if fail:
        raise BackendProtocolError("cut")


def into(got: list[bytes]) -> Deliver:
    """A deliver that takes every event."""

    def deliver(chunk: bytes) -> bool:
        got.append(chunk)
        return True

    return deliver


class Piped(Events):
    """A stream that hands its events on itself; records that it was asked to."""

    def __init__(self, *chunks: bytes) -> None:
        super().__init__(events(*chunks), None)
        self.chunks = chunks
        self.piped = 0

    async def pipe(self, deliver: Deliver) -> bool:
        self.piped += 1
        return all(deliver(chunk) for chunk in self.chunks)


def test_a_stream_that_cannot_be_piped_is_pulled_and_resumes_after_a_refusal() -> None:
    async def scenario() -> None:
        stream = Events(events(b"a", b"b", b"c", b"d"), None)
        got: list[bytes] = []

        def deliver(chunk: bytes) -> bool:
            got.append(chunk)
            return chunk != b"b"  # full after "b"

        assert not await pipe(stream, deliver)
        assert got == [b"a", b"b"]
        assert await pipe(stream, deliver)
        assert got == [b"a", b"b", b"c", b"d"]
        await stream.aclose()

    asyncio.run(scenario())


def test_a_pulled_stream_raises_what_it_raises_after_the_events_before() -> None:
    async def scenario() -> None:
        stream = Events(events(b"a", fail=True), None)
        got: list[bytes] = []
        with pytest.raises(BackendProtocolError):
            await pipe(stream, into(got))
        assert got == [b"a"]

    asyncio.run(scenario())


def test_a_stream_that_can_be_piped_pipes_itself() -> None:
    async def scenario() -> None:
        stream = Piped(b"a", b"b")
        got: list[bytes] = []
        assert await pipe(stream, into(got))
        assert (got, stream.piped) == ([b"a", b"b"], 1)
        await stream.aclose()

    asyncio.run(scenario())
