"""`gateway report` as a deploy gate (a subprocess on a real SQLite store: exit 0 PASS, 1 FAIL,
2 error) and `GET /admin/report` on a running gateway, behind its admin token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.gate_rule import GateRule
from gateway.records.sqlite import SqliteStore
from gateway.report.command import parse_since
from gateway.settings import Settings
from tests.gateway.shadow_pairs import T0, records
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import ThreadedServer

TOKEN = "admin-token-0123456789abcdef"
# The gate flags that let the hand-built records pass (see test_shadow_report.LOOSE).
LOOSE = [
    "--min-pairs=14",
    "--min-noise-pairs=5",
    "--max-agreement-drop=0.1",
    "--max-p95-ratio=1.2",
    "--max-error-rate=0.12",
    "--max-schema-violations=0.06",
    "--max-parity-flagged=0.13",
]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("records") / "pairs.db"

    async def fill() -> None:
        store = SqliteStore(path)
        await store.write_batch(records())
        await store.close()

    asyncio.run(fill())
    return f"sqlite:///{path}"


def report(store_url: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    clean |= {"GATEWAY_RECORDS_URL": store_url, **env}
    command = [sys.executable, "-m", "gateway", "report", *args]
    return subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=60)


def test_the_default_gate_fails_on_too_little_evidence(store_url: str, tmp_path: Path) -> None:
    done = report(store_url, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "VERDICT: FAIL" in done.stdout
    assert "FAIL pairs: 14 compared pairs with exact agreement (need 200)" in done.stdout


def test_a_passing_gate_exits_0_and_the_json_is_the_summary(store_url: str, tmp_path: Path) -> None:
    done = report(store_url, tmp_path, "--format=json", *LOOSE)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["verdict"]["passed"] is True
    assert summary["pairs"]["records"] == 26
    assert summary["agreement"]["exact"]["successes"] == 10
    assert summary["gate"]["max_p95_ratio"] == 1.2


def test_max_p95_ratio_off_shows_latency_without_judging_it(store_url: str, tmp_path: Path) -> None:
    loose = [flag for flag in LOOSE if not flag.startswith("--max-p95-ratio")]
    assert report(store_url, tmp_path, *loose, "--max-p95-ratio=0.5").returncode == 1
    done = report(store_url, tmp_path, *loose, "--max-p95-ratio=off", "--format=json")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["gate"]["max_p95_ratio"] is None  # JSON has no infinity: no limit
    skipped = [line for line in summary["verdict"]["reasons"] if line.startswith("SKIP p95")]
    assert len(skipped) == 2
    assert report(store_url, tmp_path, "--max-p95-ratio=of").returncode == 2


def test_gate_settings_are_the_defaults_and_flags_override_them(
    store_url: str, tmp_path: Path
) -> None:
    settings = {
        f"GATEWAY_GATE_{flag[2:].split('=')[0].replace('-', '_').upper()}": flag.split("=")[1]
        for flag in LOOSE
    }
    assert report(store_url, tmp_path, **settings).returncode == 0
    assert report(store_url, tmp_path, "--max-error-rate=0.05", **settings).returncode == 1


def test_the_gate_settings_start_from_the_rule_s_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The defaults are written once, in `GateRule`; `GATEWAY_GATE_*` set its fields."""
    for name in [name for name in os.environ if name.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert Settings().gate_rule() == GateRule()
    monkeypatch.setenv("GATEWAY_GATE_AGREEMENT", "structured")
    monkeypatch.setenv("GATEWAY_GATE_MAX_P95_RATIO", "1.5")
    assert Settings().gate_rule() == GateRule(agreement="structured", max_p95_ratio=1.5)


def test_since_and_output(store_url: str, tmp_path: Path) -> None:
    target = tmp_path / "shadow.html"
    done = report(
        store_url, tmp_path, "--since=2023-11-14T22:59:00", "--format=html", f"--output={target}"
    )
    assert done.returncode == 1
    assert done.stdout == ""
    html = target.read_text(encoding="utf-8")
    assert "4 shadow pairs" in html
    assert ">FAIL<" in html
    recent = report(store_url, tmp_path, "--since=1h", "--format=json")
    assert orjson.loads(recent.stdout)["pairs"]["records"] == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--since=yesterday"], {}, "--since 'yesterday': give a duration"),
        (["--max-error-rate=2"], {}, "must be between 0 and 1"),
        (["--format=pdf"], {}, "invalid choice"),
        ([], {"GATEWAY_GATE_MAX_P95_RATIO": "0"}, "GATEWAY_GATE_MAX_P95_RATIO"),
        ([], {"GATEWAY_RECORDS_URL": "mysql://x"}, "GATEWAY_RECORDS_URL"),
        (["--output=/nonexistent/dir/report.html"], {}, "cannot write"),
    ],
)
def test_usage_and_configuration_errors_exit_2(
    store_url: str, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = report(store_url, tmp_path, *args, **env)
    assert done.returncode == 2
    assert message in done.stderr


def test_parse_since() -> None:
    now = 1_700_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("2023-11-14T22:00:00", now) == T0
    assert parse_since("2023-11-14T23:00:00+01:00", now) == T0
    with pytest.raises(ValueError, match="duration"):
        parse_since("5 minutes", now)


@pytest.fixture(scope="module")
def gateways(
    fake_upstream: tuple[FakeUpstream, ThreadedServer], store_url: str
) -> Iterator[tuple[str, str]]:
    """Two gateways on the same records: one with an admin token, one without."""
    backend = {"vllm": VllmSettings(url=fake_upstream[1].url)}
    base: dict[str, Any] = {"backends": backend, "primary": "vllm", "records_url": store_url}
    base |= {"gate_min_pairs": 14, "gate_min_noise_pairs": 5, "gate_max_agreement_drop": 0.1}
    guarded = Settings(**base, admin_token=SecretStr(TOKEN))
    with (
        ThreadedServer(create_app(guarded)) as on,
        ThreadedServer(create_app(Settings(**base))) as off,
    ):
        yield on.url, off.url


def test_admin_report_needs_the_token(gateways: tuple[str, str]) -> None:
    on, off = gateways
    assert (
        httpx.get(f"{off}/admin/report", headers={"authorization": f"Bearer {TOKEN}"}).status_code
        == 404
    )
    missing = httpx.get(f"{on}/admin/report")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "invalid_admin_token"
    wrong = httpx.get(f"{on}/admin/report", headers={"authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    assert TOKEN not in wrong.text


def test_admin_report_in_each_format(gateways: tuple[str, str]) -> None:
    on = gateways[0]
    auth = {"authorization": f"Bearer {TOKEN}"}
    answer = httpx.get(f"{on}/admin/report", headers=auth, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    summary = answer.json()
    assert summary["pairs"]["shadow"] == 20
    assert summary["gate"]["min_pairs"] == 14  # the gateway's GATEWAY_GATE_* settings
    assert summary["verdict"]["reasons"][0].startswith("PASS pairs")
    html = httpx.get(f"{on}/admin/report?format=html&since=2023-11-14T22:59:00Z", headers=auth)
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert "4 shadow pairs" in html.text
    text = httpx.get(f"{on}/admin/report?format=text", headers=auth)
    assert text.text.startswith("Shadow report: trt (candidate) vs vllm (primary)")
    bad = httpx.get(f"{on}/admin/report?format=pdf", headers=auth)
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "format")
    since = httpx.get(f"{on}/admin/report?since=soon", headers=auth)
    assert (since.status_code, since.json()["error"]["param"]) == (400, "since")
