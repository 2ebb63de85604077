"""The HTML shadow report in a real headless browser (Debian's chromium): the charts are in the
rendered DOM, and the screenshot shows the verdict banner and the charts, not a blank page.

The screenshots stay in .cache/shadow-report/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.report.page import render_html
from gateway.report.summary import summarize
from tests.gateway.report.test_summary import LOOSE
from tests.gateway.shadow_pairs import records
from tests.support.png import Pixel, read_png

pytestmark = pytest.mark.slow  # headless Chromium

ARTIFACTS = Path(__file__).resolve().parents[3] / ".cache" / "shadow-report"
WIDTH, HEIGHT = 1200, 2000
PASS_GREEN: Pixel = (4, 120, 87)  # report_html's .verdict.pass background
FAIL_RED: Pixel = (185, 28, 28)
LINE_BLUE: Pixel = (37, 99, 235)  # the first series of every chart
DELTA_RED: Pixel = (220, 38, 38)  # a bar above zero: the candidate slower


def chromium(*args: str, profile: Path) -> str:
    browser = shutil.which("chromium")
    assert browser is not None, "install Debian's chromium (./dev test does: system_packages)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
    ]
    done = subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page(tmp_path: Path, name: str, passed: bool) -> Path:
    rule = LOOSE if passed else replace(LOOSE, min_pairs=200)
    summary = summarize(records(), rule)
    assert summary.verdict.passed is passed
    path = tmp_path / f"{name}.html"
    path.write_text(render_html(summary), encoding="utf-8")
    return path


def screenshot(tmp_path: Path, html: Path) -> list[list[Pixel]]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{html.stem}.png"
    target.unlink(missing_ok=True)
    chromium(f"--screenshot={target}", html.as_uri(), profile=tmp_path / "profile")
    rows = read_png(target)
    assert (len(rows[0]), len(rows)) == (WIDTH, HEIGHT)
    return rows


def near(pixel: Pixel, color: Pixel, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=True))


def count(colors: Counter[Pixel], color: Pixel) -> int:
    return sum(n for pixel, n in colors.items() if near(pixel, color))


def test_the_rendered_dom_has_the_charts_and_the_verdict(tmp_path: Path) -> None:
    dom = chromium("--dump-dom", page(tmp_path, "pass", True).as_uri(), profile=tmp_path / "p")
    # Two latency distributions, the percentile bars, the deltas, agreement, agreement over time.
    assert len(re.findall(r"<svg\b", dom)) == 6
    assert len(re.findall(r"<polyline\b", dom)) == 5  # vllm and trt twice, agreement over time
    assert re.search(r'<div class="verdict pass"><div class="word">PASS</div>', dom)
    assert "noise floor 80.0%" in dom
    assert re.search(r"<th>primary \\ candidate</th>", dom)  # the confusion heatmap
    assert dom.count("<tr>") > 30


@pytest.mark.parametrize(("passed", "banner"), [(True, PASS_GREEN), (False, FAIL_RED)])
def test_the_screenshot_shows_the_verdict_and_the_charts(
    tmp_path: Path, passed: bool, banner: Pixel
) -> None:
    name = "pass" if passed else "fail"
    rows = screenshot(tmp_path, page(tmp_path, name, passed))
    colors = Counter(pixel for row in rows for pixel in row)
    top = Counter(pixel for row in rows[:450] for pixel in row)  # where the banner sits
    background = colors.most_common(1)[0][0]
    assert len(colors) > 200  # text antialiasing, charts: not a blank or single-colour page
    drawn = sum(n for color, n in colors.items() if not near(color, background, 3))
    assert drawn > WIDTH * HEIGHT * 0.3  # white section cards and content, not an empty body
    assert count(top, banner) > 30_000
    assert count(top, FAIL_RED if passed else PASS_GREEN) < 500
    assert count(colors, LINE_BLUE) > 500  # the latency lines and bars
    assert count(colors, DELTA_RED) > 500  # the paired-delta bars: the candidate is slower
