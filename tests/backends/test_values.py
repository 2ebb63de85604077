import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from backends.values import value_class

ROOT = Path(__file__).resolve().parents[2]


@value_class
class Point:
    x: int
    y: int = 0


def test_a_value_class_compares_hashes_and_replaces_by_its_fields() -> None:
    assert Point(1, 2) == Point(1, 2) != Point(1, 3)
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2
    assert replace(Point(1, 2), y=5) == Point(1, 5)
    assert not hasattr(Point(1), "__dict__")  # slotted


def test_mypy_refuses_to_assign_a_field(tmp_path: Path) -> None:
    snippet = tmp_path / "assigns.py"
    snippet.write_text(
        "from gateway.shadow.pairs import Leg\n"
        "leg = Leg('vllm', 200, 'hi')\n"
        "leg.status = 500\n"
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Property "status" defined in "Leg" is read-only' in done.stdout
