"""Smoke run of the soak benchmark (benchmarks/soak) in its quick mode.

It starts the real gateway and the fault-injecting upstream, loads them for a few seconds and
reports. No thresholds on latency or memory (those come from full runs): the report must be well
formed, the faults must really have been injected, and nothing may be left stuck.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak" / "run.py"
COUNTS = ("sent", "2xx", "stream_error", "stream_cut", "4xx", "5xx", "client_error", "timeout")
GAUGES = ("rss_mb", "fds", "non_socket_fds", "tcp", "tcp_upstream", "close_wait", "in_flight",
          "client_connections", "limits_shared", "others_cpu_pct")  # fmt: skip
CHORES = ("slow_408", "reloads")
# Each fault and the answer a client must get for it.
FAULTS = {
    "503": "5xx",
    "500": "5xx",
    "garbage": "5xx",
    "hang": "5xx",
    "stall-after-headers": "stream_error",
    "malformed-sse": "stream_error",
    "reset-mid-stream": "stream_error",
}


def test_quick_soak_reports_every_window_and_injects_faults(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"soak failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    report = json.loads(out.read_text())

    windows = report["windows"]
    assert len(windows) == 8
    for row in windows:
        assert all(isinstance(row[key], int) for key in COUNTS), row
        assert all(isinstance(row[key], int | float) for key in GAUGES), row
        assert all(isinstance(row[key], int) for key in CHORES), row
        assert min(row["rss_mb"], row["fds"]) > 0, row
        assert {"t_s", "p50_ms", "p99_ms", "max_ms", "upstream_down", "redis_down"} <= row.keys()
    assert sum(row["sent"] for row in windows) == report["plan"]["requests"]
    assert any(row["upstream_down"] for row in windows)
    # Redis restarted: the limits were counted alone for a while, then shared again.
    assert report["redis_outages"][0]["up"] is not None
    assert any(row["redis_down"] and row["limits_shared"] == 0 for row in windows)
    # The slow clients were held open all along, each closed by its timeout.
    assert min(row["client_connections"] for row in windows[1:-1]) >= report["plan"]["slow_clients"]
    assert sum(row["slow_408"] for row in windows) > 0

    faults = report["faults"]
    for name, answer in FAULTS.items():
        assert faults[name]["expected"] == answer
        assert faults[name]["as_expected"] > 0, (name, faults[name])
    assert faults["none"]["as_expected"] > 0
    assert faults["upstream down or recovering"]["outcomes"]["5xx"] > 0
    assert report["outages"][0]["recovered"] is not None  # served again after the restart

    verdict = report["verdict"]
    assert verdict["in_flight_after_load"] == 0
    assert verdict["stuck_requests"] == 0
    assert verdict["checks"] == dict.fromkeys(verdict["checks"], True)
    assert verdict["passed"] is True
    assert verdict["requests"] == verdict["answered"] == report["plan"]["requests"]
    slow = verdict["slow_clients"]
    assert slow["408"] >= report["plan"]["slow_clients"]
    assert (slow["late"], slow["other"]) == (0, 0)
    assert list(verdict["reloads"]) == ["200"]
    assert verdict["reloads"]["200"] >= 3  # every 2 s of the 8
    assert verdict["limits_shared_after_load"] == 1
    assert min(verdict["rss_first_quarter_mb"], verdict["rss_last_quarter_mb"]) > 0
