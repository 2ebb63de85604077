"""gateway.numbers: each process adds into its own mapped files; any process reads the sum."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from gateway.numbers import CHUNK, LocalNumbers, SharedNumbers, empty_folder


def count_in_a_process(folder: str, times: int) -> None:
    numbers = SharedNumbers(Path(folder))
    served = numbers.cells(("served", "chat"), 3)
    gauge = numbers.cells(("in_flight", "chat"), 1)
    for _ in range(times):
        served[0] += 1
        served[2] += 0.5
    gauge[0] = 7


def test_totals_add_every_process_and_gauges_only_the_live_ones(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=count_in_a_process, args=(str(tmp_path), n)) for n in (3, 5)]
    for worker in workers:
        worker.start()
        worker.join()
    mine = SharedNumbers(tmp_path)
    own = mine.cells(("served", "chat"), 3)
    own[0] += 1
    mine.cells(("in_flight", "chat"), 1)[0] = 2
    totals = mine.totals()
    assert totals[("served", "chat")].all == [9.0, 0.0, 4.0]
    assert totals[("served", "chat")].live == [1.0, 0.0, 0.0]  # the others have exited
    assert totals[("in_flight", "chat")].live == [2.0]
    assert totals[("in_flight", "chat")].all == [16.0]
    assert totals[("in_flight", "chat")].peak == [2.0]


def test_series_past_one_chunk_go_on_in_the_next(tmp_path: Path) -> None:
    numbers = SharedNumbers(tmp_path)
    for n in range(CHUNK // 17 + 5):
        numbers.cells(("served", str(n)), 17)[16] = float(n)
    totals = numbers.totals()
    assert len(totals) == CHUNK // 17 + 5
    assert totals[("served", str(CHUNK // 17 + 4))].all[16] == CHUNK // 17 + 4
    assert len(list(tmp_path.glob(f"{os.getpid()}-*.bin"))) == 2


def test_a_half_written_index_line_is_not_read(tmp_path: Path) -> None:
    numbers = SharedNumbers(tmp_path)
    numbers.cells(("a",), 1)[0] = 1.0
    with (tmp_path / f"{os.getpid()}.idx").open("ab") as index:
        index.write(b'[0, 1, 1, "b"')  # a writer caught mid-line
    assert list(numbers.totals()) == [("a",)]


def test_emptying_the_folder_removes_only_numbers(tmp_path: Path) -> None:
    SharedNumbers(tmp_path).cells(("a",), 1)[0] = 1.0
    (tmp_path / "notes.txt").write_text("keep me")
    empty_folder(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    empty_folder(tmp_path / "new")
    assert (tmp_path / "new").is_dir()


def test_local_numbers_are_their_own_totals() -> None:
    numbers = LocalNumbers()
    cells = numbers.cells(("x",), 2)
    assert numbers.cells(("x",), 2) is cells
    cells[1] += 3
    total = numbers.totals()[("x",)]
    assert (total.all, total.live, total.peak) == ([0.0, 3.0], [0.0, 3.0], [0.0, 3.0])
