"""Quality control on the readings of closed windows: runs of identical values.

A flat-lining sensor repeats one value. :func:`window_runs` follows, per site and field,
the run of identical consecutive readings (in event-time order) through the windows as
they close, and returns for each window the longest run reaching into it. It depends on
the readings of the windows alone, not on how they were batched, so a replay or a
restart after a crash marks the same windows. The run state lives in the site's
``carry`` (it survives a crash with the windows). Vectorised: runs come from the
positions where the value changes.

A run of zeros is not counted: a pollutant at zero (SO2 far from a port) or no
movement on an empty road is a real reading, not a fault (DOMAIN.md §6; the QARTOD
flat-line test).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .engine.across import in_site_time_order

__all__ = ["window_runs", "window_runs_across"]


def window_runs(carry: dict[str, Any], field: str, ts: NDArray[np.float64],
                values: NDArray[Any], starts: NDArray[np.float64],
                size: int) -> NDArray[np.int64]:
    """Longest run of identical non-zero values reaching into each window.

    ``ts``/``values`` are the readings of windows ``starts`` (of ``size`` seconds), which
    close after every earlier window of that size; NaN means "not measured".
    """
    peaks = np.zeros(starts.size, dtype=np.int64)
    runs = carry.setdefault("runs", {})
    last, run = runs.get(field, [np.nan, 0])
    v = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(v)
    if not keep.any() or not starts.size:
        return peaks
    t = ts[keep]
    order = np.argsort(t, kind="stable")
    v, t = v[keep][order], t[order]
    idx = np.floor((t - starts[0]) / size).astype(np.int64)
    new = np.empty(v.size, dtype=np.bool_)
    new[0] = True
    new[1:] = v[1:] != v[:-1]
    seg = np.cumsum(new) - 1
    pos = np.arange(v.size, dtype=np.int64) - np.flatnonzero(new)[seg] + 1
    if v[0] == last:
        pos[seg == 0] += int(run)
    pos[v == 0.0] = 0
    np.maximum.at(peaks, idx, pos)
    runs[field] = [float(v[-1]), int(pos[-1])]
    return peaks


def window_runs_across(runs_before: list[list[float] | None], row_site: NDArray[np.int64],
                       ts: NDArray[np.float64], values: NDArray[Any], win: NDArray[np.int64],
                       windows: int) -> tuple[NDArray[np.int64], list[list[float] | None]]:
    """:func:`window_runs` of one field for many sites' closed windows at once.

    Rows are grouped by site (``row_site``, ascending), each in its arrival order; ``win``
    is each row's window among all ``windows`` of the step (a site's windows consecutive).
    ``runs_before[k]`` is site ``k``'s ``[last value, run]`` from its carry (None: none
    yet). Returns the longest run reaching into each window and, per site, its new
    ``[last value, run]`` (None where the site had no measured value: unchanged). The
    same numbers as :func:`window_runs` per site: a segment boundary is forced where the
    site changes, and each site's first segment continues its own carried run.
    """
    peaks = np.zeros(windows, dtype=np.int64)
    after: list[list[float] | None] = [None] * len(runs_before)
    v = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(v)
    if not keep.any():
        return peaks, after
    s, t, w, v = row_site[keep], ts[keep], win[keep], v[keep]
    n = v.size
    # By site, then time, stable (arrival order on ties). Rows come grouped by site, and
    # a site's rows mostly in time order already: then the order is the rows' own (a
    # stable sort leaves sorted rows where they are), found in one pass, not a sort.
    if not in_site_time_order(s, t):
        order = np.lexsort((t, s))
        s, w, v = s[order], w[order], v[order]
    first = np.empty(n, dtype=np.bool_)  # the first row of its site
    first[0] = True
    first[1:] = s[1:] != s[:-1]
    new = first.copy()
    new[1:] |= v[1:] != v[:-1]
    seg = np.cumsum(new) - 1
    pos = np.arange(n, dtype=np.int64) - np.flatnonzero(new)[seg] + 1
    heads = np.flatnonzero(first)  # each site's first row
    sites = s[heads]
    last = np.array([np.nan if runs_before[k] is None else runs_before[k][0]
                     for k in sites.tolist()], dtype=np.float64)
    run = np.array([0 if runs_before[k] is None else int(runs_before[k][1])
                    for k in sites.tolist()], dtype=np.int64)
    site_of = np.cumsum(first) - 1  # each row's position among the sites with rows
    goes_on = (seg == seg[heads][site_of]) & (v[heads] == last)[site_of]
    pos[goes_on] += run[site_of][goes_on]
    pos[v == 0.0] = 0
    np.maximum.at(peaks, w, pos)
    tails = np.append(heads[1:], n) - 1
    for k, lv, lp in zip(sites.tolist(), v[tails].tolist(), pos[tails].tolist(), strict=True):
        after[k] = [float(lv), int(lp)]
    return peaks, after
