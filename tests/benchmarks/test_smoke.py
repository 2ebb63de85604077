"""Smoke runs of every benchmark in its quickest mode: they start, measure and report.

No thresholds: the numbers come from full runs on a quiet machine (benchmarks/README.md). Each
test checks that the report is well formed and has every row, so a benchmark cannot silently rot.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from backends.transport.busy_poll import AUTO_LIMIT_US

if TYPE_CHECKING:
    from tests.engines.vllm_engine import VllmEngine

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
GUIDELLM = shutil.which("guidellm") or str(ROOT / ".venv-bench" / "bin" / "guidellm")


@pytest.fixture(scope="module")
def load_tools() -> None:
    """nginx, wrk and taskset drive the benchmarks; missing, the smoke fails, never skips."""
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:  # pragma: no cover - the message is the point
        pytest.fail(f"missing {', '.join(missing)}: ./dev test installs them")


def run(script: Path, *args: str, timeout: float = 180) -> None:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr[-4000:]}"


def numbers(row: dict[str, Any], *keys: str) -> bool:
    return all(isinstance(row[key], int | float) for key in keys)


@pytest.mark.usefixtures("load_tools")
def test_upstream_client(tmp_path: Path) -> None:
    out = tmp_path / "upstream_client.json"
    run(
        BENCH / "upstream_client" / "run.py",
        "--duration",
        "1",
        "--retries",
        "0",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    assert len(report["results"]) == 4
    for path in report["results"]:
        assert [r["connections"] for r in path["runs"]] == [1, 16, 64]
        assert all(numbers(r, "rps", "p50_ms", "p99_ms", "other_cpu_pct") for r in path["runs"])
        assert all(r["errors"] == 0 for r in path["runs"])


@pytest.mark.usefixtures("load_tools")
def test_overhead(tmp_path: Path) -> None:
    out, plot = tmp_path / "overhead.json", tmp_path / "overhead.svg"
    run(BENCH / "overhead" / "run.py", "--quick", "--json", str(out), "--plot", str(plot))
    report = json.loads(out.read_text())
    rows = {(p["scenario"], p["path"], p["concurrency"]): p for p in report["points"]}
    paths = ("direct", "nginx", "raw ASGI + aiohttp", "Python floor", "gateway")
    expected = [("http", path, c) for path in paths for c in (1, 64)]  # the quick plan's
    streamed = ("direct", "nginx", "Python floor", "gateway")
    expected += [("stream", path, n) for path in streamed for n in (1, 100)]
    expected += [
        ("http", f"Python floor, busy poll {AUTO_LIMIT_US} µs", 1),  # as the gateway
        ("http", "gateway, busy poll off", 1),
        ("http", "gateway, busy poll off", 64),
        ("http", "gateway, 10 routes", 1),  # the load's model is one of ten routes
        ("http", "gateway, 10 routes", 64),
        ("stream", "gateway, busy poll off", 1),
        ("shadow", "gateway, shadow 100%", 64),
        ("workers", "gateway, 2 workers on cores 0+1", 64),
    ]
    child = "gateway, shadow 100%, read in a child"  # GATEWAY_SHADOW_READER=process
    bursts = ("direct", "nginx", "Python floor", "gateway", "gateway, shadow 100%", child)
    beside = "direct, candidate streaming too"  # the shadowed rows' baseline
    floor = "gateway, a reader of the candidate beside"  # the shadow's floor
    expected += [("synchronised", path, 100) for path in (*bursts, beside, floor)]
    expected += [("cadence", path, 32) for path in (*bursts, beside, floor)]
    pool = "gateway, pool of 3"  # a replica pool of three upstreams
    expected += [("http", pool, c) for c in (1, 64)] + [("stream", pool, n) for n in (1, 100)]
    assert sorted(rows) == sorted(expected)
    for key in expected:
        row = rows[key]
        assert row["errors"] == 0, key
        if key[0] in ("synchronised", "cadence"):
            assert row["counted"] > 0, key
            assert row["short_streams"] == 0, key
            assert numbers(row, "delay_p50_ms", "delay_p99_ms", "gap_p99_ms"), key
            assert (row["cpu_us_per_chunk"] is None) == key[1].startswith("direct"), key
        elif key[0] == "stream":
            assert row["streams"] > 0, key
            assert row["short_streams"] == 0, key
            assert numbers(row, "ttft_p50_ms", "gap_p50_ms", "gap_p99_ms", "client_cpu_pct"), key
        else:
            assert numbers(row, "rps", "p50_ms", "p99_ms"), key
    assert rows[("stream", "gateway", 100)]["rss_mb"] > 0
    assert rows[("shadow", "gateway, shadow 100%", 64)]["extra"]["sampled"] > 0
    targets = report["summary"]["targets"]
    assert len(targets) == 12
    routed = [t for t in targets if t["name"].endswith(", 10 routes")]
    assert [t["limit"] for t in routed] == ["<= 0.30 ms", ">= 6,000", "<= 25 ms"]
    assert all(isinstance(t["measured"], int | float) for t in routed)
    shown_beside = [t for t in targets if t["limit"] == "(reference)"]  # polling off: no verdict
    assert [(t["name"], t["verdict"]) for t in shown_beside] == [
        ("same, busy poll off", "-"),
        ("same, busy poll off", "-"),
    ]
    for path in ("gateway, shadow 100%", child):
        shadowed = rows[("synchronised", path, 100)]["extra"]
        assert shadowed["completed"] == shadowed["sampled"] == 100  # every stream, none dropped
    burst_targets = report["summary"]["burst_targets"]
    assert [t["name"] for t in burst_targets] == [
        "synchronised, 100 streams: added chunk delay p99", "same, every stream shadowed",
        "same, every stream shadowed, read in a child", "same, unshadowed, a plain reader beside",
        "gateway RSS, synchronised",
        "cadence, 32 streams: added gap p99", "same, every stream shadowed",
        "same, every stream shadowed, read in a child", "same, unshadowed, a plain reader beside",
        "chunks coalesced or reordered",
        "chunks coalesced or reordered, shadowed", "chunks coalesced or reordered, read in a child",
        "gateway RSS, cadence",
    ]  # fmt: skip
    assert all(t["measured"] is not None for t in burst_targets)
    pooled = report["summary"]["pool_targets"]
    # Only targets measured on the pool's own rows: no shadow, polling or other paths' rows.
    assert [t["name"] for t in pooled] == [
        "added latency at c=1, p50", "requests/s at c=64", "p99 at c=64",
        "added TTFT p50, 1 stream", "added gap p99, 100 streams", "gateway RSS, 100 streams",
    ]  # fmt: skip
    assert all(t["measured"] is not None for t in pooled)
    assert report["machine"]["nproc"] >= 1
    assert ET.fromstring(plot.read_text()).tag.endswith("svg")  # noqa: S314  (our own file)


@pytest.mark.usefixtures("load_tools")
def test_burst_rounds(tmp_path: Path) -> None:
    # One round: the script runs and judges; merging rounds is `test_targets_over_rounds`'.
    out = tmp_path / "rounds.json"
    run(BENCH / "overhead" / "burst_rounds.py", "--quick", "--rounds", "1", "--json", str(out))
    report = json.loads(out.read_text())
    assert len(report["rounds"]) == len(report["targets_by_round"]) == 1
    points, targets = report["rounds"][0], report["targets_by_round"][0]
    assert all(p["errors"] == 0 and p["counted"] > 0 for p in points)
    rows = {(p["scenario"], p["path"]): p for p in points}
    assert ("cadence", "direct, candidate streaming too") in rows
    # The shadowed rows' figure is over the direct run beside the candidate's upstream.
    shadowed = next(t for t in targets if t["name"] == "same, every stream shadowed")
    base = rows[("synchronised", "direct, candidate streaming too")]["delay_p99_ms"]
    mine = rows[("synchronised", "gateway, shadow 100%")]["delay_p99_ms"]
    assert shadowed["measured"] == pytest.approx(mine - base, abs=1e-3)
    # So is the shadow's floor, shown for reference and judged by none.
    floor = next(t for t in targets if t["name"] == "same, unshadowed, a plain reader beside")
    least = rows[("synchronised", "gateway, a reader of the candidate beside")]["delay_p99_ms"]
    assert floor["measured"] == pytest.approx(least - base, abs=1e-3)
    assert (floor["limit"], floor["met"]) == ("(reference)", None)
    for merged, alone in zip(report["targets"], targets, strict=True):  # one round's median
        assert merged["measured"] == pytest.approx(alone["measured"], abs=1e-3), merged
    assert {t["verdict"] for t in report["targets"]} <= {"PASS", "MISS", "-"}


def test_targets_over_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scripts import their siblings by name, which mypy cannot follow: imported by name.
    monkeypatch.syspath_prepend(str(BENCH / "overhead"))
    report = importlib.import_module("benchmarks.overhead.report")
    Target, over_rounds, rounds_table = report.Target, report.over_rounds, report.rounds_table

    def round_of(gap: float, shadowed: float | None, spoiled: float) -> list[Any]:
        return [
            Target("gap", "<= 1 ms", gap, "ms", gap <= 1),
            Target("shadowed", "<= 2 x unshadowed", shadowed, "ms", None, doubles="gap"),
            Target("spoiled", "<= 0", spoiled, "", spoiled <= 0),
        ]

    rounds = [round_of(0.5, 0.9, 0), round_of(3.0, 2.5, 2), round_of(0.8, 1.9, 0)]
    gap, shadowed, spoiled = over_rounds(rounds)
    assert (gap.measured, gap.verdict) == (0.8, "PASS")  # the median of 0.5, 3.0 and 0.8
    assert (shadowed.measured, shadowed.verdict) == (1.9, "MISS")  # over 2 x 0.8
    assert (spoiled.measured, spoiled.verdict) == (2, "MISS")  # the worst round
    table = rounds_table(rounds, [gap, shadowed, spoiled])
    assert "| gap | <= 1 ms | 0.5 ms | 3 ms | 0.8 ms | 0.8 ms | PASS |" in table
    rounds[1][1] = Target("shadowed", "<= 2 x unshadowed", None, "ms", None, doubles="gap")
    assert over_rounds(rounds)[1].measured is None  # a round without it: no figure over rounds


def test_hot_path_steps_are_recognised() -> None:
    from benchmarks.overhead.stacks import Frame, breakdown, classify, parse_collapsed

    loop = Frame("Runner.run", "asyncio/runners.py", 118)
    watcher = [loop, Frame("RequestResponseCycle.receive", "uvicorn/protocols/http/x.py", 574)]
    body = [loop, Frame("read_body", "gateway/http/asgi.py", 35), watcher[1]]
    assert classify(watcher).startswith("disconnect watcher")
    assert classify(body).startswith("body read")
    assert classify([loop]).startswith("event loop")
    flush = [loop, Frame("WriteBatch.flush", "backends/transport/write_batch.py", 51)]
    assert classify(flush).startswith("socket writes")
    insert = [Frame("SqliteStore.write_batch.<locals>.insert", "gateway/records/sqlite.py", 49)]
    assert classify(insert).startswith("shadow leg")
    assert classify([]).startswith("unresolved")
    checks = [loop, Frame("is_plain", "gateway/proxy/plain_bodies.py", 125)]
    assert classify(checks).startswith("body validation")
    line = "a (gateway/app.py:82);parse_body (gateway/proxy/parsing.py:25) 7\n"
    assert breakdown(parse_collapsed([line])) == {"orjson parse of the request (parse_body)": 7}


def test_guidellm_reports_are_compared() -> None:
    from benchmarks.llm_clients.summary import added_median, describe, pooled

    def report(ttft: float) -> dict[str, Any]:
        ok = {"time_to_first_token_ms": ttft, "inter_token_latency_ms": 2.0,
              "request_latency": 0.1, "info": {"timings": {"token_iterations": 8}}}  # fmt: skip
        return {"benchmarks": [{"requests": {"successful": [ok] * 5, "errored": [{}]}}]}

    values, failed = pooled([report(10.0), report(12.0)])
    assert failed == 2
    assert len(values["ttft_ms"]) == 10
    assert describe(values)["latency_ms_p50"] == 100.0
    added = added_median(pooled([report(11.5)])[0]["ttft_ms"], values["ttft_ms"])
    assert added is not None
    assert added["ci_low"] <= added["added"] <= added["ci_high"]


def test_llm_clients(vllm_engine: VllmEngine, tmp_path: Path) -> None:
    if not Path(GUIDELLM).exists():  # pragma: no cover - the message is the point
        pytest.fail("guidellm is missing: ./dev test installs it into .venv-bench")
    out = tmp_path / "llm_clients.json"
    args = ["--quick", "--engine-url", vllm_engine.url, "--guidellm", GUIDELLM, "--json", str(out)]
    run(BENCH / "llm_clients" / "run.py", *args, timeout=300)
    report = json.loads(out.read_text())
    assert list(report["targets"]) == ["direct to vLLM", "through the gateway"]
    for row in report["targets"].values():
        assert row["requests"] > 0
        assert row["failed"] == 0
        assert numbers(row, "ttft_ms_p50", "itl_ms_p50")
    assert set(report["added"]) >= {"ttft_ms", "itl_ms"}


def overhead_script(script: str, *args: str) -> str:
    """One of the overhead folder's scripts, run to success; what it printed."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "overhead" / script), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return done.stdout


def point(script: str, *args: str) -> dict[str, str]:
    """One of the overhead folder's A/B scripts, run; its `key=value` fields."""
    return fields_of(overhead_script(script, *args))


def fields_of(out: str) -> dict[str, str]:
    """The `key=value` fields of a script's output (a key printed twice: its last value)."""
    return dict(part.split("=") for part in out.split() if "=" in part)


@pytest.mark.usefixtures("load_tools")
@pytest.mark.parametrize("args", [("16", "1"), ("16", "1", "shadow")], ids=["plain", "shadowed"])
def test_gateway_point(args: tuple[str, ...]) -> None:
    fields = point("gateway_point.py", *args)
    assert int(fields["c"]) == 16
    assert float(fields["req/s"]) > 0
    assert fields["errors"] == "0"
    assert float(fields["cpu_per_request"]) > 0


@pytest.mark.usefixtures("load_tools")
@pytest.mark.parametrize("streams", ["1", "1000"])
def test_stream_point(streams: str) -> None:
    fields = point("stream_point.py", streams, "quick")
    assert fields["errors"] == "0"
    assert float(fields["ttft_p50"]) > 0
    assert float(fields["gap_p99"]) > 0


@pytest.mark.usefixtures("load_tools")
def test_burst_point() -> None:
    out = overhead_script("burst_point.py", "cadence", "quick", "floor", "beside")
    paths = [line.split(" streams=")[0] for line in out.splitlines() if line.startswith("path=")]
    assert paths == [
        "path=floor", "path=gateway", "path=gateway, a reader beside at nice 0",
        "path=gateway, a reader beside at nice 10", "path=gateway",
    ]  # fmt: skip
    assert out.count("errors=0") == len(paths)
    fields = fields_of(out)  # the last path's
    assert float(fields["cpu_per_chunk"]) > 0
    assert float(fields["delay_p99"]) > 0
    assert fields["coalesced"] == "0"


@pytest.mark.usefixtures("load_tools")
def test_burst_point_shadowed_with_a_reader_process() -> None:
    # The candidate's steps half a step after the primary's: the ticker's phase works too.
    fields = point("burst_point.py", "cadence", "quick", "shadow", "reader", "half-step")
    assert fields["errors"] == "0"
    assert float(fields["cpu_per_chunk"]) > 0
    assert float(fields["delay_p99"]) > 0
    assert fields["coalesced"] == "0"


@pytest.mark.usefixtures("load_tools")
def test_shadow_timing() -> None:
    fields = point("shadow_timing.py", "cadence", "quick", "reader")
    assert int(fields["pairs"]) == int(fields["streams"]) > 0  # every stream paired
    for figure in ("ttft", "e2e"):
        assert 0 < float(fields[f"{figure}_primary_p50"]) <= float(fields[f"{figure}_primary_p95"])
        assert float(fields[f"{figure}_candidate_p95"]) > 0
        assert float(fields[f"{figure}_p95_ratio"]) > 0


def test_burst_client_reading_in_sweeps_reads_each_streams_chunks_together() -> None:
    # `burst_point.py ... beside sweep=MS`: the reader beside reads in bulk, not chunk by chunk.
    def read(port: str, sweep_ms: int) -> dict[str, Any]:
        out = overhead_script(
            "burst_client.py", f"http://127.0.0.1:{port}", "--streams", "4", "--chunks", "40",
            "--sweep-ms", str(sweep_ms),
        )  # fmt: skip
        return dict(json.loads(out.splitlines()[-1]))

    ticked = [BENCH / "overhead" / "sse_upstream.py", "--delay-ms", "0", "--tick-ms", "10"]
    with subprocess.Popen([sys.executable, *map(str, ticked)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT) as upstream:  # fmt: skip
        try:
            assert upstream.stdout is not None
            port = upstream.stdout.readline().split()[-1]  # "listening on PORT"
            as_they_come, in_sweeps = read(port, 0), read(port, 100)
        finally:
            upstream.terminate()
    for got in (as_they_come, in_sweeps):
        assert got["errors"] == 0
        assert got["counted"] >= 4 * 30
    # A step every 10 ms, a read every 100: about nine chunks in ten come with the one before.
    assert in_sweeps["coalesced"] > in_sweeps["counted"] / 2
    assert as_they_come["coalesced"] < as_they_come["counted"] / 2
    assert in_sweeps["delay_p50_ms"] > as_they_come["delay_p50_ms"] + 20


def test_burst_client_counts_each_chunk() -> None:
    from benchmarks.overhead.burst_stats import Arrival, Stream, summarise
    from benchmarks.overhead.ticks import event, stamps

    sent, read = [10.0, 10.5, 11.0, 11.5], [10.001, 10.502, 11.004, 11.504]
    batches = [1, 2, 3, 3]  # the last two read at once: the last one was coalesced
    arrivals = [Arrival(i, *times) for i, times in enumerate(zip(sent, read, batches, strict=True))]
    swapped = [arrivals[0], arrivals[2], arrivals[1], arrivals[3]]
    streams = [Stream(9.9, arrivals, complete=True), Stream(9.9, swapped, complete=True)]
    got = summarise(streams, chunks=4, counted_from=10.2)  # chunk 0 of each: not counted
    assert got["counted"] == 6
    assert got["coalesced"] == 1
    assert got["reordered"] == 3  # 0 -> 2, 2 -> 1, 1 -> 3
    assert got["delay_p50_ms"] == pytest.approx(4.0, abs=1e-6)
    data = event(b"m", 7, 1234.5, last=True, ids=True)
    assert [(s.index, s.sent) for s in stamps(data)] == [(7, 1234.5)]
    assert b'"finish_reason":"length"' in data
    assert b'"token_ids":[1007]' in data


@pytest.mark.usefixtures("load_tools")
def test_first_token_steps() -> None:
    out = overhead_script("first_token_steps.py", "--duration", "1.5", "--busy-poll-us", "300")
    rows = [line for line in out.splitlines() if line.endswith(" µs |")]
    assert [row.split(" | ")[0] for row in rows[:9]] == [
        "| request parsed", "| task running", "| body read", "| body valid", "| upstream send",
        "| write", "| upstream in", "| response start", "| write",
    ], out  # fmt: skip
    assert "| of which the gateway's own steps" in out, out


def test_await_cost() -> None:
    out = overhead_script("await_cost.py", "--calls", "200", "--rounds", "2")
    rows = [line for line in out.splitlines() if line.endswith(" µs |")]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 4", "| 8", "| 12"], out


def test_wake_cost() -> None:
    out = overhead_script("wake_cost.py", "--rounds", "200")
    rows = [line for line in out.splitlines() if line.startswith("| a")]
    assert len(rows) == 3, out
    assert all(" µs |" in row for row in rows), out


def test_cold_cost() -> None:
    out = overhead_script("cold_cost.py", "--rounds", "20")
    rows = [line for line in out.splitlines() if line.endswith(" µs |")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| none", "| spinning 0.1 ms", "| spinning 1 ms", "| spinning 10 ms",
        "| sleeping 0.1 ms", "| sleeping 1 ms", "| sleeping 10 ms",
    ], out  # fmt: skip
    assert all(row.count(" µs |") == 2 for row in rows), out  # both ways to read a body


def test_pair_cost() -> None:
    out = overhead_script("pair_cost.py", "--pairs", "400", "--rounds", "1")
    rows = [line for line in out.splitlines() if line.endswith(" µs |")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| legs", "| record", "| redact", "| store", "| **total**",
    ], out  # fmt: skip
