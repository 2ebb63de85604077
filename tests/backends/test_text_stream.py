"""Stream text normalisation: cumulative snapshots and stop strings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.text_stream import REPLACEMENT, CumulativeText, StopStrings


def test_cumulative_snapshots_become_deltas() -> None:
    text = CumulativeText()
    assert [text.delta(s) for s in ("Con", "Con làm", "Con làm đúng")] == ["Con", " làm", " đúng"]


def test_an_unfinished_character_is_held_back_until_complete() -> None:
    text = CumulativeText()
    assert text.delta("Chúc m") == "Chúc m"
    assert text.delta("Chúc m" + REPLACEMENT) == ""
    assert text.delta("Chúc mừ") == "ừ"


def test_the_final_snapshot_is_sent_whole() -> None:
    text = CumulativeText()
    text.delta("ab")
    assert text.delta("ab" + REPLACEMENT, final=True) == REPLACEMENT


@given(st.lists(st.text(max_size=5), max_size=8))
def test_deltas_add_up_to_the_last_snapshot(pieces: list[str]) -> None:
    text = CumulativeText()
    snapshot, sent = "", ""
    for piece in pieces:
        snapshot += piece
        sent += text.delta(snapshot)
    sent += text.delta(snapshot, final=True)
    assert sent == snapshot


def test_stop_string_split_across_chunks_is_cut() -> None:
    stops = StopStrings(["###"])
    out = [stops.feed(chunk) for chunk in ("Xin chào #", "#", "# rồi")]
    assert "".join(out) + stops.flush() == "Xin chào "
    assert stops.stopped


def test_held_text_that_is_not_a_stop_is_released() -> None:
    stops = StopStrings(["###"])
    assert stops.feed("a #") == "a "
    assert stops.feed("b") == "#b"
    assert stops.flush() == ""
    assert not stops.stopped


@given(st.lists(st.text(alphabet="ab#", max_size=4), max_size=10))
def test_output_is_the_text_before_the_first_stop(chunks: list[str]) -> None:
    stops = StopStrings(["##", "ba"])
    out = "".join(stops.feed(chunk) for chunk in chunks) + stops.flush()
    whole = "".join(chunks)
    cuts = [i for i in (whole.find("##"), whole.find("ba")) if i >= 0]
    assert out == (whole[: min(cuts)] if cuts else whole)
