"""What the gateway holds at one moment: memory, file descriptors, TCP connections, in-flight.

Read from /proc for the gateway's whole process tree (its pid and live descendants): VmRSS,
the entries of /proc/<pid>/fd, and those of its sockets found in /proc/net/tcp{,6}; and from
its own /metrics, the ``gateway_in_flight_requests`` gauge, the client connections it holds,
and whether its rate limits are shared (Redis reachable). Each sample also says how much CPU
other processes on the machine took since the previous one (``interference.py``).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.overhead.procs import Server, metrics, process_tree, rss_mb
from benchmarks.upstream_client.interference import (
    Snapshot,
    other_cpu_percent,
    snapshot,
)

LISTEN, CLOSE_WAIT = "0A", "08"  # states in /proc/net/tcp (hex)
GATEWAY_GAUGES: dict[str, tuple[str, dict[str, str]]] = {
    "in_flight": ("gateway_in_flight_requests", {}),
    "client_connections": ("gateway_client_connections", {}),
    "limits_shared": ("gateway_rate_limit_shared", {}),
}


@dataclass(frozen=True)
class Sample:
    """The gateway at monotonic time ``at``; ``tcp`` counts its non-listening sockets."""

    at: float
    rss_mb: float
    fds: int
    non_socket_fds: int  # of those, files, pipes and the like: what a leak of them would grow
    tcp: int
    tcp_upstream: int  # of those, connections to the upstream (its pool)
    close_wait: int  # peers closed, the gateway did not: a leak if it keeps growing
    in_flight: float
    client_connections: float  # the gateway's own count (gateway_client_connections)
    limits_shared: float  # 1 while the rate limits are counted in Redis, 0 while alone
    others_cpu_pct: float


class Gauges:
    """Samples one gateway; keeps the last CPU snapshot to tell others' share in between."""

    def __init__(self, gateway: Server, upstream_port: int) -> None:
        self._gateway = gateway
        self._upstream_port = upstream_port
        self._last: Snapshot = snapshot(os.getpid())

    def sample(self, at: float) -> Sample:
        """Blocking (/proc and one HTTP GET): call it in a thread from the event loop."""
        pids = process_tree(self._gateway.pid)
        fds, sockets, not_sockets = open_fds(pids)
        # By inode: a socket can be listed twice while the table changes under the reader.
        rows = {inode: (state, remote) for inode, state, remote in tcp_table() if inode in sockets}
        states = list(rows.values())
        now = snapshot(os.getpid())
        others, self._last = other_cpu_percent(self._last, now), now
        scraped = metrics(self._gateway.url, GATEWAY_GAUGES)
        return Sample(
            at=at,
            rss_mb=round(rss_mb(pids), 1),
            fds=fds,
            non_socket_fds=not_sockets,
            tcp=sum(state != LISTEN for state, _ in states),
            tcp_upstream=sum(remote == self._upstream_port for _, remote in states),
            close_wait=sum(state == CLOSE_WAIT for state, _ in states),
            in_flight=scraped["in_flight"],
            client_connections=scraped["client_connections"],
            limits_shared=scraped["limits_shared"],
            others_cpu_pct=others,
        )


def open_fds(pids: list[int]) -> tuple[int, set[str], int]:
    """How many descriptors ``pids`` hold, the inodes of their sockets, and how many are not
    sockets (files, pipes, the loop's own): exact, where a socket count races the churn."""
    count, sockets, others = 0, set(), 0
    for pid in pids:
        try:
            entries = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # the process exited meanwhile
            continue
        count += len(entries)
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:  # closed while we were listing
                continue
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
            else:
                others += 1
    return count, sockets, others


def tcp_table() -> list[tuple[str, str, int]]:
    """(inode, state, remote port) of every TCP socket in this network namespace."""
    rows = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            rows.append((fields[9], fields[3], remote_port))
    return rows
