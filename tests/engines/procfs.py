"""Linux's /proc as the dev tools, the benchmarks and the tests read it.

Example::

    seconds = cpu_ticks(pid) / TICKS_PER_SECOND  # CPU time the process has used
    len(tcp_sockets(8080, TCP_LISTEN))         # how many sockets listen on port 8080
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (so field 0 is the state, 1 the
    parent, 2 the process group, 11 and 12 utime and stime); None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it ended while we looked
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    end = stat.rfind(")")
    return None if end < 0 else stat[end + 2 :].split()


def cpu_ticks(pid: int | str) -> int:
    """User and system CPU time of process `pid` (not its children), in clock ticks; 0 once
    it is gone."""
    fields = stat_fields(pid)
    return 0 if fields is None else int(fields[11]) + int(fields[12])


def tcp_sockets(port: int, state: str) -> set[str]:
    """`socket:[inode]` of the local IPv4 TCP sockets on `port` in `state`, as the links in
    /proc/<pid>/fd name them."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            found.add(f"socket:[{fields[9]}]")
    return found
