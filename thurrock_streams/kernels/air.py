"""Air-quality window kernels: tumbling means with data capture, and running means.

Pure numpy; definitions from CONTRACT.md §5 and DOMAIN.md §3 (Directive 2008/50/EC
Annex VII, as retained in UK law). Concentrations are µg/m³ (mg/m³ for CO); the kernels
never convert units. Timestamps are UTC epoch seconds; capture is a percentage.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

__all__ = ["CAPTURE_THRESHOLD_PCT", "running_means", "window_means"]

#: A mean is valid when at least this share of its minutes (or hours) holds data.
CAPTURE_THRESHOLD_PCT: Final = 75.0

Means = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]


def _capture(have: NDArray[np.int64], out_of: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    # 100 * have first, then divide: 45/60 and 6/8 give exactly 75.0. Validity is decided
    # in integers (4 * have >= 3 * out_of) so no rounding can move the 75% line.
    pct = 100.0 * have.astype(np.float64) / out_of
    return pct, 4 * have >= 3 * out_of


def _mean(total: NDArray[np.float64], n: NDArray[np.int64]) -> NDArray[np.float64]:
    # Divide only where there is data: NaN elsewhere, and no "invalid value" warning.
    out = np.full(total.shape, np.nan)
    return np.divide(total, n, out=out, where=n > 0)


def window_means(
    ts: ArrayLike, values: ArrayLike, start: float, size_s: int, n_windows: int
) -> Means:
    """Return mean, capture_pct, valid and count of one pollutant over tumbling windows.

    Window ``i`` is ``[start + i*size_s, start + (i+1)*size_s)``; ``start`` must be a
    multiple of ``size_s`` and ``size_s`` a positive multiple of 60 s (epoch-aligned,
    CONTRACT.md §3). ``ts`` are UTC epoch seconds (finite, any order); ``values`` are the
    concentrations (µg/m³, mg/m³ for CO), NaN meaning "not measured" — such a sample is
    ignored entirely, as is one outside every window; ±inf raises ``ValueError``.

    Per window: ``mean`` of the samples (NaN when none), ``capture_pct`` = 100 × distinct
    epoch minutes (``floor(ts / 60)``) holding a sample / minutes in the window, ``valid`` =
    capture_pct >= 75 (CONTRACT.md §5), and ``count`` = samples used.

    >>> import numpy as np
    >>> ts = 60.0 * np.arange(45) + 1.5  # one sample in each of the first 45 minutes
    >>> mean, pct, valid, count = window_means(ts, np.full(45, 20.0), 0.0, 3600, 2)
    >>> mean, pct, valid, count
    (array([20., nan]), array([75.,  0.]), array([ True, False]), array([45,  0]))
    """
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"ts and values must be 1-D and alike, got {t.shape} and {v.shape}")
    if size_s <= 0 or size_s % 60 or start % size_s or n_windows < 0:
        raise ValueError("need size_s a positive multiple of 60, start a multiple of size_s")
    if not np.isfinite(t).all() or np.isinf(v).any():
        raise ValueError("ts must be finite and values finite or NaN")
    end = start + float(size_s) * n_windows
    used = ~np.isnan(v) & (t >= start) & (t < end)
    per_window = size_s // 60
    # floor_divide on floats is exact (fmod-based), so minute and window agree with
    # start <= ts < end; the window follows from the minute since windows are minute-aligned.
    minute = np.floor_divide(t[used], 60.0).astype(np.int64)
    window = (minute - int(start) // 60) // per_window
    count = np.bincount(window, minlength=n_windows).astype(np.int64)
    total = np.asarray(np.bincount(window, weights=v[used], minlength=n_windows), np.float64)
    minutes_window = (np.unique(minute) - int(start) // 60) // per_window
    minutes_seen = np.bincount(minutes_window, minlength=n_windows).astype(np.int64)
    pct, valid = _capture(minutes_seen, per_window)
    return _mean(total, count), pct, valid, count


def running_means(hourly_mean: ArrayLike, hourly_valid: ArrayLike, hours: int) -> Means:
    """Return mean, capture_pct, valid and n_valid of the running mean over ``hours`` hours.

    The inputs are one entry per consecutive hour, oldest first: the hour's mean (µg/m³,
    mg/m³ for CO; NaN when the hour had no sample) and whether that 1h mean is valid. An
    hour counts as valid only when ``hourly_valid`` is True and its mean is not NaN.

    Entry ``i`` covers hours ``i - hours + 1 .. i``; hours before the first entry count as
    missing (CONTRACT.md §5). ``n_valid`` = valid hours in that span, ``capture_pct`` =
    100 × n_valid / hours, ``valid`` = capture_pct >= 75 (≥ 6 of 8, ≥ 18 of 24: DOMAIN.md
    §3), and ``mean`` averages the valid hourly means only (NaN when there are none).

    >>> import numpy as np
    >>> h = np.full(8, 50.5)
    >>> ok = np.array([False, False, True, True, True, True, True, True])
    >>> mean, pct, valid, n = running_means(h, ok, 8)
    >>> mean[-2:], pct[-2:], valid[-2:], n[-2:]
    (array([50.5, 50.5]), array([62.5, 75. ]), array([False,  True]), array([5, 6]))
    """
    m = np.asarray(hourly_mean, dtype=np.float64)
    ok = np.asarray(hourly_valid, dtype=np.bool_)
    if m.shape != ok.shape or m.ndim != 1:
        raise ValueError(f"hourly inputs must be 1-D and alike, got {m.shape} and {ok.shape}")
    if hours < 1:
        raise ValueError(f"hours must be at least 1, got {hours}")
    if np.isinf(m).any():
        raise ValueError("hourly means must be finite or NaN")
    ok = ok & ~np.isnan(m)
    if m.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.bool_), empty
    # Zero-pad the past with hours - 1 missing hours and sum each window directly: unlike a
    # cumulative-sum difference, this cannot drift (eight 50.5s average to exactly 50.5).
    pad = hours - 1
    vals = np.concatenate([np.zeros(pad), np.where(ok, m, 0.0)])
    flags = np.concatenate([np.zeros(pad, dtype=np.int64), ok.astype(np.int64)])
    total = sliding_window_view(vals, hours).sum(axis=1)
    n_valid = sliding_window_view(flags, hours).sum(axis=1).astype(np.int64)
    pct, valid = _capture(n_valid, hours)
    return _mean(total, n_valid), pct, valid, n_valid
