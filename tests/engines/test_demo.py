"""`./dev demo`, the README's first command, runs end to end: the command it execs is
`gateway demo`, so this runs that on real vLLM and Triton and reads what it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.engines import demo_traffic

ROOT = Path(__file__).resolve().parents[2]


def test_the_dev_script_runs_gateway_demo() -> None:
    script = (ROOT / "dev").read_text(encoding="utf-8")
    assert 'exec "$PY" -m gateway demo "$@"' in script


def test_the_demo_tags_shadows_and_gives_both_verdicts() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--port", "0"],
        capture_output=True, text=True, timeout=1500, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    out = done.stdout
    (ROOT / ".cache" / "demo-output.txt").write_text(out + done.stderr, encoding="utf-8")
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    shown = re.findall(r"^  -> (\{.*\})   \(dataset: (\{.*\})\)$", out, re.MULTILINE)
    assert len(shown) == len(demo_traffic.SHOWN)
    for labels, _ in shown:
        assert set(json.loads(labels)) == {"mood", "celebrate"}
    app = re.search(r"only `model` changed:\n  -> (\{.*\})$", out, re.MULTILINE)
    assert app is not None
    assert app[1] == shown[0][0]  # the app's block request gets the two-message labels
    assert "latency is shown, not judged" in out
    assert out.count("SKIP p95 e2e: not judged") == 2
    reports = re.findall(r"^demo: the HTML report is (.+)$", out, re.MULTILINE)
    assert [Path(path).name for path in reports] == [
        "demo-report-same.html",
        "demo-report-broken.html",
    ]
    assert all(Path(path).is_file() for path in reports)
    same = re.search(r"^demo: same weights: cutover verdict (PASS|FAIL): (.*)$", out, re.M)
    broken = re.search(r"^demo: wrong chat template: cutover verdict (PASS|FAIL): (.*)$", out, re.M)
    assert same is not None
    assert broken is not None
    assert same[1] == "PASS", same[2]
    assert re.search(r"agreement \(exact\): candidate \d+\.\d% .* vs noise floor", same[2])
    # The wrong template changes the prompt the candidate reads: every pair is flagged for
    # parity (not counted as a disagreement), which fails the gate, and the line says so.
    assert broken[1] == "FAIL", broken[2]
    assert re.search(
        r"parameter parity: 100\.0% .* flagged \(prompt tokens differ: \d+\)", broken[2]
    )
    assert "pairs: 0 compared pairs" in broken[2]
