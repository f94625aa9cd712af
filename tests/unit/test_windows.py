"""The window engine against a slow, obvious, one-reading-at-a-time reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from thurrock_streams.engine.windows import EngineConfig, SiteWindows

CFG = EngineConfig(sizes=(60, 900), allowed_lateness_s=30.0, max_clock_skew_s=300.0)


def reference(ts: list[float], now: float, cfg: EngineConfig):
    """CONTRACT.md §3 applied literally, one reading at a time."""
    w = -math.inf
    closed = {s: -math.inf for s in cfg.sizes}  # every window with end <= closed[s] is closed
    accepted: list[float] = []
    verdicts = []
    for t in ts:
        if t > now + cfg.max_clock_skew_s:
            verdicts.append("future")
            continue
        if any(math.floor(t / s) * s + s <= closed[s] for s in cfg.sizes):
            verdicts.append("late")
            continue
        verdicts.append("ok")
        accepted.append(t)
        w = max(w, t)
        for s in cfg.sizes:
            closed[s] = max(closed[s], math.floor((w - cfg.allowed_lateness_s) / s) * s)
    windows = {}
    for s in cfg.sizes:
        if not accepted:
            windows[s] = {}
            continue
        first = min(math.floor(t / s) * s for t in accepted)
        windows[s] = {start: sorted(t for t in accepted if start <= t < start + s)
                      for start in range(int(first), int(closed[s]), s)}
    return verdicts, windows


def run_engine(ts: list[float], cuts: list[int], now: float, cfg: EngineConfig):
    sw = SiteWindows()
    verdicts: list[str] = []
    windows: dict[int, dict[int, list[float]]] = {s: {} for s in cfg.sizes}
    bounds = sorted({0, len(ts), *[c for c in cuts if 0 < c < len(ts)]})
    for a, b in itertools.pairwise(bounds):
        arr = np.array(ts[a:b], dtype=np.float64)
        res = sw.ingest(cfg, arr, {"v": arr * 2}, now)
        verdicts += ["future" if f else "late" if lt else "ok"
                     for f, lt in zip(res.future, res.late, strict=True)]
        for c in res.closed:
            idx = c.index()
            for i, start in enumerate(c.starts):
                assert int(start) not in windows[c.size], "a window was handed out twice"
                windows[c.size][int(start)] = sorted(c.ts[idx == i].tolist())
            assert np.array_equal(c.cols["v"], c.ts * 2)
    return verdicts, windows, sw


times = st.lists(st.integers(0, 4000).map(float) | st.floats(0, 4000, allow_nan=False),
                 min_size=0, max_size=60)


@given(ts=times, cuts=st.lists(st.integers(0, 60), max_size=6))
def test_engine_matches_reference_for_any_batching(ts: list[float], cuts: list[int]) -> None:
    now = 3900.0  # readings above 4200 would be future; a few are within 300 s skew
    want_verdicts, want_windows = reference(ts, now, CFG)
    got_verdicts, got_windows, _ = run_engine(ts, cuts, now, CFG)
    assert got_verdicts == want_verdicts
    assert got_windows == want_windows


def test_future_readings_are_rejected_and_do_not_move_the_watermark() -> None:
    sw = SiteWindows()
    res = sw.ingest(CFG, np.array([100.0, 10_000.0, 110.0]), {}, now=1000.0)
    assert res.future.tolist() == [False, True, False]
    assert sw.watermark == 110.0


def test_window_closes_exactly_at_end_plus_lateness() -> None:
    sw = SiteWindows()
    assert sw.ingest(CFG, np.array([5.0, 89.9]), {}, now=1e9).closed == []
    res = sw.ingest(CFG, np.array([90.0]), {}, now=1e9)
    assert [c.starts.tolist() for c in res.closed] == [[0.0]]


def test_reading_in_closed_window_is_late_even_if_in_open_15m_window() -> None:
    sw = SiteWindows()
    sw.ingest(CFG, np.array([0.0, 200.0]), {}, now=1e9)
    res = sw.ingest(CFG, np.array([100.0, 150.0]), {}, now=1e9)
    # 1m windows up to 120 closed (200 - 30 = 170 -> edge 120): 100 is late, 150 is not.
    assert res.late.tolist() == [True, False]


def test_empty_windows_between_readings_are_handed_out() -> None:
    sw = SiteWindows()
    res = sw.ingest(CFG, np.array([10.0, 400.0]), {}, now=1e9)
    one_minute = next(c for c in res.closed if c.size == 60)
    assert one_minute.starts.tolist() == [0.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    assert np.bincount(one_minute.index(), minlength=6).tolist() == [1, 0, 0, 0, 0, 0]


def test_idle_flush_closes_windows_holding_readings_and_invents_none_after() -> None:
    sw = SiteWindows()
    sw.ingest(CFG, np.array([10.0, 70.0]), {}, now=1e9)
    closed = {c.size: c.starts.tolist() for c in sw.flush(CFG)}
    assert closed == {60: [0.0, 60.0], 900: [0.0]}
    assert not sw.has_open()
    assert sw.flush(CFG) == []
    # After the flush, a reading in a flushed window is late; a later one opens anew.
    res = sw.ingest(CFG, np.array([100.0, 1000.0]), {}, now=1e9)
    assert res.late.tolist() == [True, False]


def test_state_round_trip() -> None:
    sw = SiteWindows()
    sw.ingest(CFG, np.array([10.0, 70.0]), {"v": np.array([1.0, 2.0])}, now=1e9)
    back = SiteWindows.from_state(sw.to_state())
    assert back.watermark == sw.watermark and back.closed_until == sw.closed_until
    assert back.buf_cols["v"].tolist() == [1.0, 2.0]
