"""Statistics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import pytest

from gateway.stats import (
    Latency,
    Proportion,
    accuracy,
    agreement,
    confusion,
    f1_scores,
    latency,
    macro_f1,
    percentile,
    proportion,
    wilson,
)


def test_percentiles_interpolate_between_ranks() -> None:
    values = [50.0, 15.0, 40.0, 20.0, 35.0]  # sorted: 15 20 35 40 50, ranks 0..4
    assert percentile(values, 0) == 15.0
    assert percentile(values, 50) == 35.0  # rank 2
    assert percentile(values, 95) == pytest.approx(48.0)  # rank 3.8: 40 + 0.8 * 10
    assert percentile(values, 99) == pytest.approx(49.6)  # rank 3.96: 40 + 0.96 * 10
    assert percentile(values, 100) == 50.0
    assert percentile(values, 25) == 20.0  # rank 1
    assert latency([7.0]) == Latency(n=1, p50=7.0, p95=7.0, p99=7.0, mean=7.0)
    spread = latency(values)  # the mean: 160 / 5
    assert (spread.n, spread.p50, spread.mean) == (5, 35.0, 32.0)
    assert spread.percentiles == pytest.approx((35.0, 48.0, 49.6))


def test_percentile_refuses_no_data_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="no values"):
        latency([])


def test_wilson_interval_by_hand() -> None:
    # 8 of 10, z = 1.96: centre (0.8 + 3.8416/20) / 1.38416 = 0.99208 / 1.38416 = 0.7167379,
    # margin 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.3136245 / 1.38416 = 0.2265811.
    low, high = wilson(8, 10, z=1.96)
    assert low == pytest.approx(0.4901568, abs=1e-6)
    assert high == pytest.approx(0.9433190, abs=1e-6)
    # 0 of 10: centre = margin = 0.19208 / 1.38416 = 0.1387701, so [0, 0.2775402].
    low, high = wilson(0, 10, z=1.96)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.2775402, abs=1e-6)
    # 10 of 10 mirrors 0 of 10.
    low, high = wilson(10, 10, z=1.96)
    assert (low, high) == pytest.approx((0.7224598, 1.0), abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson(3, 2)


def test_proportion_carries_rate_and_interval() -> None:
    value = proportion(8, 10)
    assert (value.successes, value.n, value.rate) == (8, 10, 0.8)
    assert value.low == pytest.approx(0.4902, abs=1e-4)  # default z is 1.95996...
    assert proportion(0, 0).rate == 0.0
    assert Proportion(3, 4, low=0.3, high=0.9).rate == 0.75  # worked out, never passed


GOLD = ["a", "a", "b", "b", "c"]
GUESS = ["a", "b", "b", "(invalid)", "a"]


def test_confusion_rows_gold_columns_predicted_with_extras_last() -> None:
    matrix = confusion(GOLD, GUESS, ["a", "b", "c"])
    assert matrix.labels == ("a", "b", "c")
    assert matrix.predicted == ("a", "b", "c", "(invalid)")
    assert matrix.matrix == ((1, 1, 0, 0), (0, 1, 0, 1), (1, 0, 0, 0))
    assert matrix.count("c", "a") == 1
    # Without labels: the gold labels, sorted; a gold label missing from `labels` is added.
    assert confusion(["y", "x"], ["x", "x"]).labels == ("x", "y")
    assert confusion(["z"], ["z"], ["a"]).labels == ("a", "z")


def test_f1_and_macro_f1_by_hand() -> None:
    # a: tp 1, fp 1 (c->a), fn 1 (a->b): 2/4. b: tp 1, fp 1 (a->b), fn 1 (b->invalid): 2/4.
    # c: tp 0, fp 0, fn 1: 0. d: occurs nowhere: None, and left out of the mean.
    assert f1_scores(GOLD, GUESS, ["a", "b", "c", "d"]) == {"a": 0.5, "b": 0.5, "c": 0.0, "d": None}
    assert macro_f1(GOLD, GUESS, ["a", "b", "c", "d"]) == pytest.approx(1 / 3)
    assert macro_f1(GOLD, GUESS) == pytest.approx(1 / 3)  # default labels: a, b, c
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    assert macro_f1([], [], ["a"]) is None


def test_accuracy_and_agreement() -> None:
    assert accuracy(GOLD, GUESS).successes == 2
    both = agreement(["x", "y", "z", "x"], ["x", "y", "x", "x"])
    assert (both.successes, both.n) == (3, 4)
    assert (both.low, both.high) == wilson(3, 4)
    with pytest.raises(ValueError, match="differ in length"):
        agreement(["x"], [])
