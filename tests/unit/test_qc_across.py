"""Flat-line runs of many sites at once (qc.window_runs_across) against the per-site
function (qc.window_runs, itself checked with hand-worked values in test_alert_engine.py)."""

from __future__ import annotations

import copy
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.qc import window_runs, window_runs_across

SIZE = 60
values = st.sampled_from([0.0, 7.5, 7.5, 50.0, 50.0, math.nan])


@st.composite
def sites(draw: st.DrawFn) -> list[tuple[float, list[tuple[float, float]], list[float] | None,
                                         int]]:
    """Per site: its first window start, its rows (ts, value) in arrival order (ts within
    its windows, not sorted), its carried [last value, run] (None: no carry yet) and its
    number of windows."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        first = SIZE * draw(st.integers(0, 3))
        n_windows = draw(st.integers(1, 3))
        rows = draw(st.lists(st.tuples(
            st.integers(0, n_windows * SIZE - 1).map(lambda x: float(x)), values),
            max_size=12))
        rows = [(first + t, v) for t, v in rows]
        carried = draw(st.none() | st.tuples(values, st.integers(0, 9)).map(list))
        out.append((float(first), rows, carried, n_windows))
    return out


@settings(max_examples=300, derandomize=True, deadline=None)
@given(feed=sites())
def test_many_sites_at_once_give_each_sites_own_runs(feed: list) -> None:
    row_site, ts, vals, win, before = [], [], [], [], []
    win_base = 0
    want_peaks: list[int] = []
    want_after: list[list[float] | None] = []
    for k, (first, rows, carried, n_windows) in enumerate(feed):
        starts = first + SIZE * np.arange(n_windows, dtype=np.float64)
        t = np.array([r[0] for r in rows], dtype=np.float64)
        v = np.array([r[1] for r in rows], dtype=np.float64)
        carry = {"runs": {"f": copy.copy(carried)}} if carried is not None else {}
        want_peaks += window_runs(carry, "f", t, v, starts, SIZE).tolist()
        # no measured value: the carry is left as it was, which the across function says
        # with None
        want_after.append(carry["runs"]["f"] if (~np.isnan(v)).any() else None)
        row_site += [k] * len(rows)
        ts += t.tolist()
        vals += v.tolist()
        win += (win_base + np.floor((t - first) / SIZE).astype(np.int64)).tolist()
        before.append(copy.copy(carried))
        win_base += n_windows
    peaks, after = window_runs_across(
        before, np.array(row_site, dtype=np.int64), np.array(ts, dtype=np.float64),
        np.array(vals, dtype=np.float64), np.array(win, dtype=np.int64), win_base)
    assert peaks.tolist() == want_peaks
    assert [a if a is None else [a[0], a[1]] for a in after] == want_after


def test_a_run_does_not_carry_from_one_site_into_the_next() -> None:
    # Site 0 ends on 50.0 (a run of 2), site 1 starts on 50.0 with no carry: its run is 1.
    peaks, after = window_runs_across(
        [None, None], np.array([0, 0, 1]), np.array([1.0, 2.0, 1.0]),
        np.array([50.0, 50.0, 50.0]), np.array([0, 0, 1]), 2)
    assert peaks.tolist() == [2, 1]
    assert after == [[50.0, 2], [50.0, 1]]


def test_a_sites_carried_run_continues_into_its_first_window_only_when_equal() -> None:
    peaks, after = window_runs_across(
        [[50.0, 4], [7.5, 9]], np.array([0, 0, 1]), np.array([1.0, 61.0, 1.0]),
        np.array([50.0, 50.0, 50.0]), np.array([0, 1, 2]), 3)
    assert peaks.tolist() == [5, 6, 1]
    assert after == [[50.0, 6], [50.0, 1]]
