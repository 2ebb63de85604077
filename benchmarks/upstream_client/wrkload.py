"""Run wrk against one URL and turn its text report into numbers.

``parse_wrk`` is pure, so it can be checked without servers::

    >>> r = parse_wrk("50%   19.00us\\n 99%   1.14ms\\nRequests/sec:  46805.87\\n", 1)
    >>> (r.p50_ms, r.p99_ms, r.rps)
    (0.019, 1.14, 46805.87)
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# wrk prints latencies with one of these suffixes (see wrk's units.c).
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk failed or printed a report this module cannot read."""


@dataclass(frozen=True)
class WrkResult:
    """One closed-loop load point as wrk saw it."""

    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx responses plus socket errors; any is a broken path
    other_cpu_pct: float = 0.0  # filled by the caller: CPU taken by processes outside the run


def parse_wrk(text: str, connections: int) -> WrkResult:
    """Extract requests/s, p50, p99 and the error count from ``wrk --latency`` output."""
    percentiles = {m[1]: round(float(m[2]) * UNIT_MS[m[3]], 6) for m in PERCENTILE.finditer(text)}
    rps = RPS.search(text)
    if rps is None or set(percentiles) != {"50", "99"}:
        raise WrkError(f"unreadable wrk report:\n{text}")
    errors = sum(int(n) for m in NON_2XX.finditer(text) for n in m.groups())
    errors += sum(int(n) for m in SOCKET_ERRORS.finditer(text) for n in m.groups())
    return WrkResult(connections, float(rps[1]), percentiles["50"], percentiles["99"], errors)


def run_wrk(url: str, connections: int, duration: int, script: Path, core: int) -> WrkResult:
    """Run one wrk thread pinned to ``core`` for ``duration`` seconds; bounded by a timeout."""
    load = [f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script)]
    command = ["taskset", "-c", str(core), "wrk", "-t1", *load, "--latency", url]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {exc}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}:\n{done.stderr}")
    return parse_wrk(done.stdout, connections)
