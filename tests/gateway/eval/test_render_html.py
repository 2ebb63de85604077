"""`gateway eval --format html` in a real headless browser (Debian's chromium): the charts and
confusion matrices are in the rendered DOM, and the screenshot shows them, not a blank page.

The page is the eval of three fixed targets (`eval_runs`); the screenshot stays in
.cache/eval-report/ for a person to look at.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from gateway.eval.render import render
from tests.gateway import eval_runs
from tests.gateway.report.test_render_html import HEIGHT, WIDTH, chromium, count
from tests.support.png import Pixel, read_png

pytestmark = pytest.mark.slow  # headless Chromium

ARTIFACTS = Path(__file__).resolve().parents[3] / ".cache" / "eval-report"
# charts.PALETTE's first three series, drawn opaque by the latency chart (p50, p95, p99)
BLUE: Pixel = (37, 99, 235)
ORANGE: Pixel = (217, 119, 6)
GREEN: Pixel = (5, 150, 105)
# The interval bars: the first series at opacity 0.75 over white.
PALE_BLUE: Pixel = (92, 138, 240)


def page(tmp_path: Path) -> Path:
    summary = eval_runs.summary()
    path = tmp_path / "eval.html"
    path.write_text(render(summary, "html"), encoding="utf-8")
    return path


def test_the_rendered_dom_has_every_chart_and_confusion_matrix(tmp_path: Path) -> None:
    dom = chromium("--dump-dom", page(tmp_path).as_uri(), profile=tmp_path / "p")
    # The latency bars, an interval chart per target (3), the agreement between targets.
    assert len(re.findall(r"<svg\b", dom)) == 5
    # p50, p95 and p99 bars for each of the three targets.
    assert len(re.findall(r"<rect\b[^>]*fill=\"#2563eb\"[^>]*>\s*<title>", dom)) == 3
    # A confusion matrix per target and field (mood, celebrate).
    assert dom.count("<th>gold \\ predicted</th>") == 6
    for pair in ("gw vs engine: exact", "gw vs plain: exact", "engine vs plain: exact"):
        assert pair in dom


def test_the_screenshot_shows_the_charts(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / "eval.png"
    target.unlink(missing_ok=True)
    chromium(f"--screenshot={target}", page(tmp_path).as_uri(), profile=tmp_path / "profile")
    rows = read_png(target)
    assert (len(rows[0]), len(rows)) == (WIDTH, HEIGHT)
    colors = Counter(pixel for row in rows for pixel in row)
    background = colors.most_common(1)[0][0]
    assert len(colors) > 200  # text antialiasing, charts: not a blank or single-colour page
    assert sum(n for pixel, n in colors.items() if pixel != background) > WIDTH * HEIGHT * 0.2
    for series in (BLUE, ORANGE, GREEN):  # the latency chart's three percentiles
        assert count(colors, series) > 1_000
    assert count(colors, PALE_BLUE) > 5_000  # the targets' accuracy bars
