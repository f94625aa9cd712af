"""Air kernels: tumbling window means with data capture, and running means."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from thurrock_streams.kernels.air import CAPTURE_THRESHOLD_PCT, running_means, window_means

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
RTOL = 1e-12
Means = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]
NAN = math.nan
T0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z, a multiple of 900 and 3600


def minutes_ts(minutes: list[int], second: float = 30.0, start: float = T0) -> NDArray[np.float64]:
    return start + 60.0 * np.asarray(minutes, dtype=np.float64) + second


# -- reference implementations: slow and obvious ------------------------------------------


Row = tuple[float, float, bool, int]  # mean, capture_pct, valid, count


def ref_window_means(
    ts: list[float], values: list[float], start: float, size_s: int, n_windows: int
) -> list[Row]:
    out: list[Row] = []
    for i in range(n_windows):
        lo, hi = start + i * size_s, start + (i + 1) * size_s
        used = [(t, v) for t, v in zip(ts, values, strict=True) if lo <= t < hi and v == v]
        minutes = {math.floor(Fraction(t) / 60) for t, _ in used}
        vals = [v for _, v in used]
        mean = math.fsum(vals) / len(vals) if vals else NAN
        pct = Fraction(100 * len(minutes), size_s // 60)
        out.append((mean, float(pct), pct >= 75, len(vals)))
    return out


def ref_running_means(means: list[float], valid: list[bool], hours: int) -> list[Row]:
    out: list[Row] = []
    for i in range(len(means)):
        span = range(max(0, i - hours + 1), i + 1)
        good = [means[j] for j in span if valid[j] and means[j] == means[j]]
        pct = Fraction(100 * len(good), hours)
        mean = math.fsum(good) / len(good) if good else NAN
        out.append((mean, float(pct), pct >= 75, len(good)))
    return out


def assert_matches(got: Means, expected: list[Row]) -> None:
    mean, pct, valid, count = got
    assert mean.dtype == pct.dtype == np.float64
    assert valid.dtype == np.bool_ and count.dtype == np.int64
    assert len(mean) == len(expected)
    if not expected:
        return
    e_mean, e_pct, e_valid, e_count = (list(c) for c in zip(*expected, strict=True))
    np.testing.assert_allclose(mean, e_mean, rtol=RTOL, atol=0, equal_nan=True)
    np.testing.assert_allclose(pct, e_pct, rtol=RTOL, atol=0)
    assert valid.tolist() == e_valid
    assert count.tolist() == e_count


# -- window_means: hand-computed cases -------------------------------------------------------


def test_empty_window() -> None:
    mean, pct, valid, count = window_means(np.array([]), np.array([]), T0, 3600, 2)
    assert np.isnan(mean).all() and pct.tolist() == [0.0, 0.0]
    assert valid.tolist() == [False, False] and count.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("size_s", "filled", "pct", "ok"),
    [
        (3600, 45, 75.0, True),
        (3600, 44, 100 * 44 / 60, False),
        (3600, 60, 100.0, True),
        (900, 12, 80.0, True),
        (900, 11, 100 * 11 / 15, False),
        (900, 15, 100.0, True),
    ],
)
def test_capture_threshold(size_s: int, filled: int, pct: float, ok: bool) -> None:
    ts = minutes_ts(list(range(filled)))
    mean, got_pct, valid, count = window_means(ts, np.full(filled, 10.0), T0, size_s, 1)
    assert got_pct[0] == pytest.approx(pct, rel=RTOL)
    assert valid[0] == ok and count[0] == filled and mean[0] == 10.0
    assert (got_pct[0] >= CAPTURE_THRESHOLD_PCT) == ok


def test_exactly_75_percent_is_exact() -> None:
    ts = minutes_ts(list(range(0, 60, 4)) + list(range(1, 60, 4)) + list(range(2, 60, 4)))
    _, pct, valid, _ = window_means(ts, np.ones(45), T0, 3600, 1)
    assert pct[0] == 75.0 and valid[0]


def test_several_samples_in_one_minute_count_once() -> None:
    ts = np.concatenate([minutes_ts([0, 0, 0, 1], second=s) for s in (0.0, 10.0, 59.9)])
    values = np.array([1.0, 2.0, 3.0, 4.0] * 3)
    mean, pct, valid, count = window_means(ts, values, T0, 900, 1)
    assert count[0] == 12 and mean[0] == pytest.approx(2.5, rel=RTOL)
    assert pct[0] == pytest.approx(100 * 2 / 15, rel=RTOL) and not valid[0]


def test_nan_samples_are_ignored() -> None:
    ts = minutes_ts(list(range(15)))
    values = np.where(np.arange(15) < 11, 20.0, NAN)  # minutes 11..14 only hold NaN
    values[0] = 50.0
    mean, pct, valid, count = window_means(ts, values, T0, 900, 1)
    assert count[0] == 11 and mean[0] == pytest.approx((50 + 10 * 20) / 11, rel=RTOL)
    assert pct[0] == pytest.approx(100 * 11 / 15, rel=RTOL) and not valid[0]


def test_window_edges_and_samples_outside() -> None:
    ts = np.array([T0 - 0.001, T0, T0 + 899.999, T0 + 900.0, T0 + 1800.0, T0 + 5000.0])
    values = np.array([99.0, 1.0, 2.0, 3.0, 98.0, 97.0])
    mean, _, _, count = window_means(ts, values, T0, 900, 2)
    assert count.tolist() == [2, 1] and mean.tolist() == [1.5, 3.0]


def test_unordered_samples() -> None:
    ts = minutes_ts([14, 3, 0, 3, 7])
    values = np.array([5.0, 1.0, 2.0, 3.0, 4.0])
    mean, pct, _, count = window_means(ts, values, T0, 900, 1)
    assert mean[0] == 3.0 and count[0] == 5 and pct[0] == pytest.approx(400 / 15, rel=RTOL)


def test_no_windows() -> None:
    got = window_means(minutes_ts([1]), np.array([1.0]), T0, 60, 0)
    assert all(a.shape == (0,) for a in got)


@pytest.mark.parametrize(
    ("ts", "values", "start", "size_s"),
    [
        ([T0], [1.0, 2.0], T0, 900),  # shapes differ
        ([T0], [1.0], T0, 90),  # not whole minutes
        ([T0], [1.0], T0 + 60, 900),  # start not aligned
        ([T0], [1.0], T0, 0),
        ([NAN], [1.0], T0, 900),
        ([T0], [math.inf], T0, 900),
    ],
)
def test_window_means_rejects_bad_input(
    ts: list[float], values: list[float], start: float, size_s: int
) -> None:
    with pytest.raises(ValueError):
        window_means(np.array(ts), np.array(values), start, size_s, 1)


# -- running_means: hand-computed cases ------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "n_ok", "pct", "ok"),
    [
        (8, 5, 62.5, False),
        (8, 6, 75.0, True),
        (8, 8, 100.0, True),
        (24, 17, 100 * 17 / 24, False),
        (24, 18, 75.0, True),
    ],
)
def test_running_capture(hours: int, n_ok: int, pct: float, ok: bool) -> None:
    hourly = np.where(np.arange(hours) < n_ok, 40.0, 900.0)  # invalid hours hold 900
    valid_in = np.arange(hours) < n_ok
    mean, got_pct, valid, n_valid = running_means(hourly, valid_in, hours)
    assert n_valid[-1] == n_ok and valid[-1] == ok
    assert got_pct[-1] == pytest.approx(pct, rel=RTOL)
    assert mean[-1] == 40.0  # only the valid hours are averaged


def test_running_mean_averages_valid_hours_only() -> None:
    hourly = np.array([10.0, 20.0, NAN, 30.0, 1000.0, 40.0, 50.0, 60.0])
    ok = np.array([True, True, False, True, False, True, True, True])
    mean, pct, valid, n_valid = running_means(hourly, ok, 8)
    assert mean[-1] == 35.0 and n_valid[-1] == 6 and pct[-1] == 75.0 and valid[-1]


def test_hours_before_first_reading_are_missing() -> None:
    mean, pct, valid, n_valid = running_means(np.full(8, 12.0), np.ones(8, dtype=bool), 8)
    assert n_valid.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert valid.tolist() == [False] * 5 + [True] * 3
    assert pct.tolist() == [12.5 * k for k in range(1, 9)]
    assert (mean == 12.0).all()


def test_running_mean_is_exact_after_large_values() -> None:
    hourly = np.concatenate([np.full(500, 1e9 / 3), np.full(8, 50.5)])
    mean, _, _, _ = running_means(hourly, np.ones(hourly.size, dtype=bool), 8)
    assert mean[-1] == 50.5


def test_valid_flag_with_nan_mean_counts_as_missing() -> None:
    mean, _, _, n_valid = running_means(np.array([NAN, 7.0]), np.array([True, True]), 2)
    assert n_valid.tolist() == [0, 1] and np.isnan(mean[0]) and mean[1] == 7.0


def test_running_means_edges() -> None:
    assert all(a.shape == (0,) for a in running_means(np.array([]), np.array([]), 24))
    mean, pct, _, _ = running_means(np.array([1.0, 2.0]), np.array([True, False]), 1)
    assert mean[0] == 1.0 and np.isnan(mean[1]) and pct.tolist() == [100.0, 0.0]
    with pytest.raises(ValueError):
        running_means(np.array([1.0]), np.array([True]), 0)
    with pytest.raises(ValueError):
        running_means(np.array([1.0]), np.array([True, True]), 8)
    with pytest.raises(ValueError):
        running_means(np.array([math.inf]), np.array([True]), 8)


# -- property tests against the references ---------------------------------------------------

WindowCase = tuple[list[float], list[float], float, int, int]
value_st = st.floats(0, 1000) | st.just(NAN)


@st.composite
def sample_windows(draw: st.DrawFn) -> WindowCase:
    size_s = draw(st.sampled_from([60, 120, 300, 900, 3600]))
    n_windows = draw(st.integers(0, 5))
    start = float(size_s * draw(st.integers(0, 2_000_000)))
    span = size_s // 60 * (n_windows + 1)
    minute = st.integers(-size_s // 60, span)
    second = st.floats(0, 60, exclude_max=True) | st.sampled_from([0.0, 59.999999])
    samples = draw(st.lists(st.tuples(minute, second, value_st), max_size=300))
    ts = [start + 60.0 * m + s for m, s, _ in samples]
    return ts, [v for *_, v in samples], start, size_s, n_windows


@PROPERTY
@given(sample_windows())
def test_window_means_matches_reference(case: WindowCase) -> None:
    ts, values, start, size_s, n_windows = case
    got = window_means(np.array(ts), np.array(values), start, size_s, n_windows)
    assert_matches(got, ref_window_means(ts, values, start, size_s, n_windows))


@PROPERTY
@given(
    st.integers(1, 30) | st.sampled_from([8, 24]),
    st.lists(st.tuples(value_st, st.booleans() | st.just(True)), max_size=80),
)
def test_running_means_matches_reference(hours: int, series: list[tuple[float, bool]]) -> None:
    means = [m for m, _ in series]
    ok = [v for _, v in series]
    got = running_means(np.array(means), np.array(ok, dtype=bool), hours)
    assert_matches(got, ref_running_means(means, ok, hours))
