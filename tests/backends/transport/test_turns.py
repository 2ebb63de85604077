"""backends.transport.turns: waiters go one per turn of the loop, oldest first; a cancelled one
leaves the line without holding it up."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest
import uvloop

from backends.transport.turns import OnePerTurn


async def released_on_turns(count: int, cancel: int | None = None) -> list[tuple[int, int]]:
    """(waiter, turn) in the order the waiters went; a callback counts the loop's turns."""
    loop = asyncio.get_running_loop()
    turns, went = [0], []

    def count_turn() -> None:
        turns[0] += 1
        loop.call_soon(count_turn)

    loop.call_soon(count_turn)
    line = OnePerTurn()

    async def waiter(index: int) -> None:
        await line.next()
        went.append((index, turns[0]))

    tasks = [asyncio.ensure_future(waiter(index)) for index in range(count)]
    await asyncio.sleep(0)
    if cancel is not None:
        tasks[cancel].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(line) == 0
    return went


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_waiters_go_one_per_turn_in_arrival_order(run: object) -> None:
    went = run(released_on_turns(5))  # type: ignore[operator]
    assert [index for index, _ in went] == [0, 1, 2, 3, 4]
    turns = [turn for _, turn in went]
    assert all(later > earlier for earlier, later in pairwise(turns))


def test_a_cancelled_waiter_leaves_the_line() -> None:
    went = asyncio.run(released_on_turns(4, cancel=1))
    assert [index for index, _ in went] == [0, 2, 3]
