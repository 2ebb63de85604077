"""Where the metrics' numbers live: plain lists in one process, or files of doubles mapped in
memory that every worker of a `gateway serve --workers N` group reads at a scrape.

Each process writes only its own files (`<pid>.idx`, `<pid>-<chunk>.bin` in the group's
folder): a series is a run of doubles in a chunk, named once by a line of the index, and an
update is an add into the mapped memory (no lock: one event loop thread writes them), which
costs about what adding to a list does. A scrape, in whichever worker it reaches, reads every
process's files and adds them up: counters and histograms over every process that ever ran
(a worker restarted by the supervisor leaves its files, so totals never go back), gauges over
the live ones only. The folder is emptied by `gateway serve` before the workers start.

Example::

    numbers = SharedNumbers(Path("/tmp/gateway-metrics"))
    cells = numbers.cells(("served", "chat", "vllm"), 3)
    cells[0] += 1
    numbers.totals()[("served", "chat", "vllm")].all      # [1.0, 0.0, 0.0], all processes
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import orjson

Key = tuple[str, ...]


class Cells(Protocol):
    """A run of numbers: a list, or a slice of a mapped file (memoryview of doubles)."""

    def __getitem__(self, index: int, /) -> float: ...

    def __setitem__(self, index: int, value: float, /) -> None: ...


CHUNK = 8192  # doubles per mapped file: far more than the 17 of one histogram
FILE_SUFFIXES = (".idx", ".bin")


@dataclass(slots=True)
class Total:
    """One series' values added up: over every process (`all`), over the live ones (`live`),
    and the largest of the live ones (`peak`), element by element."""

    all: list[float]
    live: list[float]
    peak: list[float]


class Numbers(Protocol):
    def cells(self, key: Key, size: int) -> Cells:
        """`size` zeroed numbers for the series `key` (ask once per series, keep them)."""
        ...

    def totals(self) -> dict[Key, Total]:
        """Every series of every process, added up."""
        ...


class LocalNumbers:
    """One process's numbers, in lists."""

    def __init__(self) -> None:
        self._series: dict[Key, list[float]] = {}

    def cells(self, key: Key, size: int) -> Cells:
        return self._series.setdefault(key, [0.0] * size)

    def totals(self) -> dict[Key, Total]:
        return {key: Total(list(v), list(v), list(v)) for key, v in list(self._series.items())}


class SharedNumbers:
    """This process's numbers in mapped files of `folder`, and every process's totals."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._pid = os.getpid()
        self._maps: list[mmap.mmap] = []
        self._used = CHUNK  # no chunk yet: the first series maps one
        self._series: dict[Key, Cells] = {}
        self._index = os.open(folder / f"{self._pid}.idx", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def cells(self, key: Key, size: int) -> Cells:
        found = self._series.get(key)
        if found is not None:
            return found
        if self._used + size > CHUNK:
            self._map_chunk()
        chunk, offset = len(self._maps) - 1, self._used
        self._used += size
        view = cast(Cells, memoryview(self._maps[chunk]).cast("d")[offset : offset + size])
        # One short append: readers take whole lines only, so never see half of one.
        os.write(self._index, orjson.dumps([chunk, offset, size, *key]) + b"\n")
        self._series[key] = view
        return view

    def _map_chunk(self) -> None:
        path = self._folder / f"{self._pid}-{len(self._maps)}.bin"
        with path.open("wb+") as handle:
            handle.truncate(CHUNK * 8)
            self._maps.append(mmap.mmap(handle.fileno(), CHUNK * 8))
        self._used = 0

    def totals(self) -> dict[Key, Total]:
        totals: dict[Key, Total] = {}
        for index in sorted(self._folder.glob("*.idx")):
            pid = int(index.stem)
            live = pid == self._pid or _alive(pid)
            for key, values in _read_process(self._folder, index).items():
                _add(totals, key, values, live)
        return totals


def _read_process(folder: Path, index: Path) -> dict[Key, list[float]]:
    """One process's series as they are now: whole index lines only, chunks as written."""
    chunks: dict[int, memoryview[float]] = {}
    series: dict[Key, list[float]] = {}
    for line in index.read_bytes().split(b"\n")[:-1]:
        chunk, offset, size, *key = orjson.loads(line)
        if chunk not in chunks:
            with contextlib.suppress(FileNotFoundError):
                raw = (folder / f"{index.stem}-{chunk}.bin").read_bytes()
                chunks[chunk] = memoryview(raw).cast("d")
        if chunk in chunks:
            series[tuple(key)] = [float(v) for v in chunks[chunk][offset : offset + size]]
    return series


def _add(totals: dict[Key, Total], key: Key, values: list[float], live: bool) -> None:
    total = totals.get(key)
    if total is None:
        zero = [0.0] * len(values)
        total = totals[key] = Total(list(zero), list(zero), list(zero))
    for i, value in enumerate(values):
        total.all[i] += value
        if live:
            total.live[i] += value
            total.peak[i] = max(total.peak[i], value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def empty_folder(folder: Path) -> None:
    """Makes `folder` ready for a new group: created if missing, this module's files removed
    (numbers left by an earlier run would be added to the new one's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.suffix in FILE_SUFFIXES and path.name.split("-")[0].split(".")[0].isdigit():
            path.unlink(missing_ok=True)
