"""Measure how much CPU other processes took while a load point ran.

The machine may be shared (2 cores, no isolation), so a point is only trustworthy if nothing
outside the benchmark's own process tree was busy. "Other" is the machine's busy time from
/proc/stat (user, nice, system, steal) minus the time of this process, its reaped children (wrk)
and its live descendants (nginx, uvicorn); so short-lived foreign processes are counted too.
Interrupt time is left out on both sides: on loopback it is mostly this benchmark's own traffic.
"""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.engines

from tests.engines.procfs import TICKS_PER_SECOND as TICKS_PER_S
from tests.engines.procfs import stat_fields


@dataclass(frozen=True)
class Snapshot:
    """Machine busy ticks, this tree's ticks per live process and its own, at one moment."""

    at: float
    busy: int
    tree: dict[int, int]
    own: int


def snapshot(root: int) -> Snapshot:
    """Read /proc/stat and the CPU ticks of ``root`` (this process) and its descendants."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    own = os.times()  # includes reaped children such as a finished wrk
    own_ticks = round(
        (own.user + own.system + own.children_user + own.children_system) * TICKS_PER_S
    )
    return Snapshot(time.monotonic(), user + nice + system + steal, tree_ticks(root), own_ticks)


def other_cpu_percent(before: Snapshot, after: Snapshot) -> float:
    """Percent of one core used between the two snapshots by anything outside this tree."""
    ours = after.own - before.own
    ours += sum(ticks - before.tree.get(pid, 0) for pid, ticks in after.tree.items())
    other = max(after.busy - before.busy - ours, 0)
    return round(100.0 * other / TICKS_PER_S / max(after.at - before.at, 1e-9), 1)


def tree_ticks(root: int) -> dict[int, int]:
    """utime + stime of every live descendant of ``root`` (not ``root`` itself)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        fields = stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is None:  # not a process, or it exited while we were listing
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return {pid: ticks[pid] for pid in parents if pid != root and descends(pid, root, parents)}


def descends(pid: int, root: int, parents: dict[int, int]) -> bool:
    """Whether ``root`` is on ``pid``'s chain of parents."""
    while pid in parents and pid > 1:
        pid = parents[pid]
        if pid == root:
            return True
    return False


def wait_until_quiet(root: int, limit_pct: float, timeout_s: float) -> float:
    """Sample one-second windows until others use at most ``limit_pct`` of a core; bounded.

    Returns the last sample, so a caller can tell whether the machine did become quiet.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        before = snapshot(root)
        time.sleep(1.0)
        other = other_cpu_percent(before, snapshot(root))
        if other <= limit_pct or time.monotonic() >= deadline:
            return other
