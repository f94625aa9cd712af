"""The window engine of :mod:`.windows` for many sites at once: one pass of numpy calls.

:meth:`SiteWindows.ingest` applies one site's batch; :func:`ingest_across` applies the
batches of many sites together, with the same rules (CONTRACT.md §3) and, bit for bit, the
same verdicts, closed windows and new states. The number of numpy calls does not grow
with the number of sites; what stays per site is reading its state's scalars into arrays
and building its new state from them (plain Python, no numpy call per site).

How the per-site rules become array operations (rows grouped by site, arrival order kept):

- the watermark before each row is a *segmented* running maximum: each value is replaced
  by its rank among all values (an integer), ``site * n + rank`` is made monotonic across
  sites, so one ``np.maximum.accumulate`` yields every site's running maximum, exactly
  (when every site's rows are already in time order, the usual case, the running maximum
  is the row's own time and the sort is skipped);
- the late test, the new watermark, spans and first windows are elementwise or per-site
  reductions (``np.maximum.at`` and ``np.minimum.at``) over those arrays;
- the old buffers of all sites and the new accepted rows are concatenated and put in
  site order (old rows first, as ``np.concatenate`` per site would); the windows to hand
  out and the rows inside them are masks over that one array;
- a site whose only event is a heartbeat raises its watermark and span as
  :meth:`SiteWindows.heartbeat` does, and its windows close in the same pass.

Sites this cannot take exactly as :meth:`SiteWindows.ingest` would (buffer columns or
dtypes unlike the batch's, edges in an unusual order) are refused by :func:`can_take`;
the caller steps them on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .windows import Closed, EngineConfig, SiteWindows

__all__ = ["ClosedAcross", "IngestAcross", "can_take", "in_site_time_order", "ingest_across"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_NEG_INF = float("-inf")
#: Below this magnitude every window start floor(t / s) * s is a whole number held exactly,
#: so start + i * s equals what ``np.arange`` makes.
_EXACT = 2.0**52


@dataclass
class ClosedAcross:
    """Windows of one length closed by one step, for many sites.

    ``site``/``starts`` are per window (windows of a site consecutive, ascending, sites in
    order); ``win``/``ts``/``cols`` per reading inside them (``win`` indexes the windows);
    ``win_bounds``/``row_bounds`` give site ``k`` its windows ``[b[k], b[k + 1])`` and rows.
    """

    size: int
    site: I64
    starts: F64
    win: I64
    ts: F64
    cols: dict[str, NDArray[Any]]
    win_bounds: I64
    row_bounds: I64

    def of_site(self, k: int) -> Closed | None:
        """Site ``k``'s windows as :meth:`SiteWindows.ingest` hands them out (None: none)."""
        a, b = int(self.win_bounds[k]), int(self.win_bounds[k + 1])
        if a == b:
            return None
        r0, r1 = int(self.row_bounds[k]), int(self.row_bounds[k + 1])
        return Closed(self.size, self.starts[a:b], self.ts[r0:r1],
                      {name: v[r0:r1] for name, v in self.cols.items()})


@dataclass
class IngestAcross:
    """What :func:`ingest_across` did: per-row verdicts, new states, closed windows."""

    future: NDArray[np.bool_]
    late: NDArray[np.bool_]
    accepted_per_site: I64
    windows: list[SiteWindows]
    closed: list[ClosedAcross]
    """One entry per window length (config order), possibly without windows."""


def can_take(cfg: EngineConfig, cols: dict[str, NDArray[Any]]) -> Callable[[SiteWindows],
                                                                          bool]:
    """A test, for a batch with ``cols``: True if :func:`ingest_across` reproduces
    ``w.ingest`` for state ``w`` (its buffer has the batch's columns and dtypes, its edges
    are kept per window length in config order)."""
    sizes = cfg.sizes
    names = tuple(cols)
    dtypes = [v.dtype for v in cols.values()]
    f8 = np.dtype(np.float64)

    def test(w: SiteWindows) -> bool:
        for d in (w.closed_until, w.next_emit, w.span_end):
            if d and tuple(d) != sizes:
                return False
        ts = w.buf_ts
        if ts.dtype != f8 or ts.ndim != 1:
            return False
        buf = w.buf_cols
        if not buf:
            return ts.size == 0
        if tuple(buf) != names:
            return False
        n = ts.size
        for v, dt in zip(buf.values(), dtypes, strict=True):
            if v.dtype != dt or v.ndim != 1 or v.size != n:
                return False
        return True
    return test


def _floor(t: F64, size: int) -> F64:
    out: F64 = np.floor(t / size) * size
    return out


def in_site_time_order(site: NDArray[np.int64], t: F64) -> bool:
    """True if the rows are grouped by site, sites ascending, and each site's times do
    not decrease: the order a stable sort by site, then time, would give (one pass)."""
    later_site = site[1:] > site[:-1]
    return bool((later_site | ((site[1:] == site[:-1]) & (t[1:] >= t[:-1]))).all())


def _running_max(site: I64, tv: F64) -> F64:
    """Each row's maximum of ``tv`` over its site's rows up to and including it, exactly.

    ``site`` is non-decreasing. When every site's rows are already in time order (the
    usual case) that is each row's own value. Otherwise values become ranks (integers),
    ``site * n + rank`` rises across sites, and one ``np.maximum.accumulate`` yields every
    site's running maximum.
    """
    if in_site_time_order(site, tv):
        return tv
    n = int(tv.size)
    order = np.argsort(tv, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    key = site * n + rank
    out: F64 = tv[order][np.maximum.accumulate(key) - site * n]
    return out


def ingest_across(cfg: EngineConfig, olds: list[SiteWindows], site: I64, ts: F64,
                  cols: dict[str, NDArray[Any]], now: float,
                  beat: F64 | None = None) -> IngestAcross:
    """Apply each site's rows to its state, as ``olds[k].ingest`` would, all at once.

    ``site`` gives each row's site (0..len(olds)-1), non-decreasing; rows of a site are in
    arrival order. ``beat`` (-inf for none) is a heartbeat for a site *without* rows, as
    ``olds[k].heartbeat`` applies it when it is not ``future`` (the caller's test); a site
    with neither rows nor a beat changes nothing. ``olds`` are not changed.
    """
    k_n = len(olds)
    n = int(ts.size)
    sizes = cfg.sizes
    lat = cfg.allowed_lateness_s
    w0 = np.array([w.watermark for w in olds], dtype=np.float64)
    cu0 = {s: np.array([w.closed_until.get(s, _NEG_INF) for w in olds], dtype=np.float64)
           for s in sizes}
    ne0 = {s: np.array([w.next_emit.get(s, np.nan) for w in olds], dtype=np.float64)
           for s in sizes}
    se0 = {s: np.array([w.span_end.get(s, _NEG_INF) for w in olds], dtype=np.float64)
           for s in sizes}
    run0 = np.array([w.run_to for w in olds], dtype=np.float64)

    # Verdicts: future, then late against the watermark before each row.
    future = ts > now + cfg.max_clock_skew_s
    valid = ~future
    tv = np.where(valid, ts, _NEG_INF)
    before = np.empty(n, dtype=np.float64)
    if n:
        first_row = np.empty(n, dtype=np.bool_)
        first_row[0] = True
        first_row[1:] = site[1:] != site[:-1]
        running = _running_max(site, tv)
        before[0] = _NEG_INF
        before[1:] = running[:-1]
        before[first_row] = _NEG_INF
    w_before = np.maximum(before, w0[site])
    late = np.zeros(n, dtype=np.bool_)
    for s in sizes:
        edge = np.maximum(_floor(w_before - lat, s), cu0[s][site])
        late |= _floor(tv, s) + s <= edge
    late &= valid
    acc = valid & ~late

    # Accepted rows: watermark, first windows, spans.
    acc_site = site[acc]
    acc_ts = ts[acc]
    n_acc = np.bincount(acc_site, minlength=k_n).astype(np.int64)
    any_acc = n_acc > 0
    hi = np.full(k_n, _NEG_INF)
    np.maximum.at(hi, acc_site, acc_ts)
    lo = np.full(k_n, np.inf)
    np.minimum.at(lo, acc_site, acc_ts)
    w1 = np.maximum(w0, hi)
    run1 = np.where(any_acc, _NEG_INF, run0)
    if beat is None:
        raised = np.zeros(k_n, dtype=np.bool_)
        hb = np.full(k_n, _NEG_INF)
    else:
        if np.isfinite(beat[site]).any():
            raise ValueError("a heartbeat is only taken for a site without rows")
        raised = beat > w0  # SiteWindows.heartbeat: one at or behind W changes nothing
        hb = np.where(raised, beat, _NEG_INF)
        w1 = np.maximum(w1, hb)
        run1 = np.where(raised, _NEG_INF, run1)
    ne1, se1, cu1, stop, nwin = {}, {}, {}, {}, {}
    with np.errstate(invalid="ignore"):  # inf - inf for sites without accepted rows
        for s in sizes:
            ne1[s] = np.where(any_acc, np.fmin(ne0[s], _floor(lo, s)), ne0[s])
            se1[s] = np.where(any_acc, np.maximum(se0[s], _floor(hi, s) + s), se0[s])
            se1[s] = np.where(raised, np.maximum(se1[s], _floor(hb, s)), se1[s])
            cu1[s] = np.maximum(_floor(w1 - lat, s), cu0[s])
            stop[s] = np.minimum(cu1[s], se1[s])
            has = ~np.isnan(ne1[s]) & (ne1[s] < stop[s])
            nwin[s] = np.where(has, np.ceil((stop[s] - ne1[s]) / s), 0.0).astype(np.int64)

    # Buffers: old rows of every site, then its accepted rows, in site order.
    names = list(cols)
    old_n = np.array([w.buf_ts.size for w in olds], dtype=np.int64)
    all_site = np.concatenate((np.repeat(np.arange(k_n, dtype=np.int64), old_n), acc_site))
    pick = np.argsort(all_site, kind="stable")
    all_site = all_site[pick]
    all_ts = np.concatenate([w.buf_ts for w in olds] + [acc_ts])[pick]
    all_cols = {}
    for name in names:
        parts = [w.buf_cols[name] for w in olds if w.buf_ts.size]
        all_cols[name] = np.concatenate([*parts, cols[name][acc]])[pick]

    closed = []
    for s in sizes:
        count = nwin[s]
        win_bounds = np.concatenate(([0], np.cumsum(count))).astype(np.int64)
        total = int(win_bounds[-1])
        w_site = np.repeat(np.arange(k_n, dtype=np.int64), count)
        has = count > 0
        first = ne1[s]
        if total and bool((np.abs(first[has]) < _EXACT).all()
                          and (np.abs(stop[s][has]) < _EXACT).all()):
            step_i = np.arange(total, dtype=np.int64) - win_bounds[:-1][w_site]
            starts = first[w_site] + step_i * float(s)
        elif total:  # beyond exact whole numbers: np.arange, as SiteWindows._close does
            starts = np.concatenate([np.arange(first[k], stop[s][k], s, dtype=np.float64)
                                     for k in np.flatnonzero(has).tolist()])
        else:
            starts = np.zeros(0, dtype=np.float64)
        row_first = first[all_site]
        with np.errstate(invalid="ignore"):
            inside = has[all_site] & (all_ts >= row_first) & (all_ts < stop[s][all_site])
        r_site = all_site[inside]
        r_ts = all_ts[inside]
        win = (win_bounds[:-1][r_site]
               + np.floor((r_ts - row_first[inside]) / s).astype(np.int64))
        row_bounds = np.concatenate(
            ([0], np.cumsum(np.bincount(r_site, minlength=k_n)))).astype(np.int64)
        closed.append(ClosedAcross(s, w_site, starts, win, r_ts,
                                   {name: v[inside] for name, v in all_cols.items()},
                                   win_bounds, row_bounds))

    # Trim what every window length has closed past, then the new states.
    keep_from = np.minimum.reduce([cu1[s] for s in sizes])
    keep = all_ts >= keep_from[all_site]
    kept_ts = all_ts[keep]
    kept_cols = {name: v[keep] for name, v in all_cols.items()}
    bounds = np.concatenate(([0], np.cumsum(np.bincount(all_site[keep], minlength=k_n))))
    b = bounds.tolist()
    w1_l, run1_l, acc_l = w1.tolist(), run1.tolist(), any_acc.tolist()
    raised_l = raised.tolist()
    # Per window length, every site's value (Python floats: dicts are built per site).
    cu_l = [cu1[s].tolist() for s in sizes]
    ne_l = [np.where(nwin[s] > 0, stop[s], ne1[s]).tolist() for s in sizes]
    se_l = [se1[s].tolist() for s in sizes]
    if len(sizes) == 2:  # the pipelines' case: dict literals (this loop runs per site)
        s0, s1 = sizes
        cu = [{s0: x, s1: y} for x, y in zip(*cu_l, strict=True)]
        ne = [{s0: x, s1: y} if x == x else {} for x, y in zip(*ne_l, strict=True)]
        se = [{s0: x, s1: y} for x, y in zip(*se_l, strict=True)]
    else:
        cu = [dict(zip(sizes, v, strict=True)) for v in zip(*cu_l, strict=True)]
        ne = [dict(zip(sizes, v, strict=True)) if v[0] == v[0] else {}
              for v in zip(*ne_l, strict=True)]
        se = [dict(zip(sizes, v, strict=True)) for v in zip(*se_l, strict=True)]
    kept = list(kept_cols.values())
    news = []
    for k, old in enumerate(olds):
        a, z = b[k], b[k + 1]
        fresh = acc_l[k]
        news.append(SiteWindows(
            w1_l[k], cu[k], ne[k],  # next_emit {} (NaN): no reading accepted yet
            kept_ts[a:z].copy(),
            dict(zip(names, [v[a:z].copy() for v in kept], strict=True))
            if fresh or old.buf_cols else {},
            se[k] if fresh or old.span_end or raised_l[k] else {},
            run1_l[k]))
    return IngestAcross(future, late, n_acc, news, closed)
