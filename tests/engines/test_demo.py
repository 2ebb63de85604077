"""`./dev demo`, the README's first command, runs end to end: the command it execs is
`gateway demo`, so this runs that on real vLLM and Triton and reads what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.engines.vllm_engine import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_dev_script_runs_gateway_demo() -> None:
    script = (ROOT / "dev").read_text(encoding="utf-8")
    assert 'exec "$PY" -m gateway demo "$@"' in script


def test_the_demo_serves_shadows_and_reports_a_verdict() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--port", str(free_port())],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "x-gateway-backend" in out  # the first request, printed with the gateway's headers
    assert "noise floor" in out.lower()
    assert "cutover verdict PASS" in out or "cutover verdict FAIL" in out
