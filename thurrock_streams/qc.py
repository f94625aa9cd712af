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

__all__ = ["window_runs"]


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
