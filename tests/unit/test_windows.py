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
    """CONTRACT.md §3 applied literally, one reading at a time (readings only)."""
    return reference_events([("r", t) for t in ts], now, cfg)


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


def test_a_running_watermark_closes_windows_and_invents_none_after_the_span() -> None:
    sw = SiteWindows()
    sw.ingest(CFG, np.array([10.0, 70.0]), {}, now=1e9)
    closed = {c.size: c.starts.tolist() for c in sw.run_on(CFG, 70.0 + 2000)}
    assert closed == {60: [0.0, 60.0], 900: [0.0]}
    assert sw.watermark == 70.0  # the data watermark stays
    assert sw.run_on(CFG, 70.0 + 3000) == []  # closes more, but nothing is in the span
    # A reading in a window the running watermark closed is late; a later one is
    # accepted, and its window closes with the empty ones before it now inside the span.
    res = sw.ingest(CFG, np.array([100.0, 3200.0]), {}, now=1e9)
    assert res.late.tolist() == [True, False]
    closed: dict[int, list[float]] = {60: [], 900: []}
    for c in [*res.closed, *sw.run_on(CFG, 3200.0 + 2000)]:
        closed[c.size] += c.starts.tolist()
    assert closed[900] == [900.0, 1800.0, 2700.0]
    assert closed[60] == [float(t) for t in range(120, 3240, 60)]


def test_a_heartbeat_past_the_last_window_closes_and_writes_it_at_once() -> None:
    sw = SiteWindows()
    sw.ingest(CFG, np.array([10.0, 70.0]), {}, now=1e9)
    future, closed = sw.heartbeat(CFG, 900.0 + 30.0, now=1e9)
    assert not future
    got = {c.size: c.starts.tolist() for c in closed}
    # every 1-minute window ending at or before the heartbeat is in the span (empty ones
    # included); the 15-minute window of the readings closes
    assert got == {60: [float(t) for t in range(0, 900, 60)], 900: [0.0]}
    assert sw.heartbeat(CFG, 500.0, now=1e9) == (False, [])  # behind: changes nothing
    assert sw.heartbeat(CFG, 2e9, now=1e9) == (True, [])  # future


def test_state_round_trip() -> None:
    sw = SiteWindows()
    sw.ingest(CFG, np.array([10.0, 70.0]), {"v": np.array([1.0, 2.0])}, now=1e9)
    back = SiteWindows.from_state(sw.to_state())
    assert back.watermark == sw.watermark and back.closed_until == sw.closed_until
    assert back.buf_cols["v"].tolist() == [1.0, 2.0]


def reference_events(events: list[tuple[str, float]], now: float, cfg: EngineConfig):
    """CONTRACT.md §3 with heartbeats and quiet spells, one event at a time.

    ``("r", t)`` a reading, ``("h", t)`` a heartbeat, ``("q", w)`` a running watermark.
    """
    w = -math.inf
    closed = {s: -math.inf for s in cfg.sizes}
    span = {s: -math.inf for s in cfg.sizes}  # windows ending at or before are in the span
    accepted: list[float] = []
    verdicts = []

    def close(x: float) -> None:
        for s in cfg.sizes:
            closed[s] = max(closed[s], math.floor((x - cfg.allowed_lateness_s) / s) * s)

    for kind, t in events:
        if kind == "q":
            close(t)
            continue
        if t > now + cfg.max_clock_skew_s:
            verdicts.append("future")
            continue
        if kind == "h":
            verdicts.append("beat")
            if t > w:
                w = t
                for s in cfg.sizes:
                    span[s] = max(span[s], math.floor(t / s) * s)
                close(w)
            continue
        if any(math.floor(t / s) * s + s <= closed[s] for s in cfg.sizes):
            verdicts.append("late")
            continue
        verdicts.append("ok")
        accepted.append(t)
        w = max(w, t)
        for s in cfg.sizes:
            span[s] = max(span[s], math.floor(t / s) * s + s)
        close(w)
    windows = {}
    for s in cfg.sizes:
        if not accepted:
            windows[s] = {}
            continue
        first = min(math.floor(t / s) * s for t in accepted)
        stop = min(closed[s], span[s])
        windows[s] = {start: sorted(t for t in accepted if start <= t < start + s)
                      for start in range(int(first), int(stop), s)}
    return verdicts, windows


events = st.lists(st.tuples(st.sampled_from("rrrrhq"),
                            st.integers(0, 5000).map(float) | st.floats(0, 5000,
                                                                        allow_nan=False)),
                  max_size=60)


@given(evs=events, cuts=st.lists(st.integers(0, 60), max_size=6))
def test_engine_matches_reference_with_heartbeats_and_quiet_spells(
        evs: list[tuple[str, float]], cuts: list[int]) -> None:
    """Readings batched anyhow between heartbeats and running watermarks; every window is
    handed out once, holding exactly the reference's readings."""
    now = 4800.0
    want_verdicts, want_windows = reference_events(evs, now, CFG)
    sw = SiteWindows()
    verdicts: list[str] = []
    windows: dict[int, dict[int, list[float]]] = {s: {} for s in CFG.sizes}

    def take(closed: list) -> None:  # type: ignore[type-arg]
        for c in closed:
            idx = c.index()
            for i, start in enumerate(c.starts):
                assert int(start) not in windows[c.size], "a window was handed out twice"
                windows[c.size][int(start)] = sorted(c.ts[idx == i].tolist())

    pending: list[float] = []

    def ingest() -> None:
        if pending:
            res = sw.ingest(CFG, np.array(pending), {}, now)
            verdicts.extend("future" if f else "late" if lt else "ok"
                            for f, lt in zip(res.future, res.late, strict=True))
            take(res.closed)
            pending.clear()

    for i, (kind, t) in enumerate(evs):
        if kind == "r":
            pending.append(t)
            if i in cuts:
                ingest()
            continue
        ingest()
        if kind == "h":
            future, closed = sw.heartbeat(CFG, t, now)
            verdicts.append("future" if future else "beat")
            take(closed)
        else:
            take(sw.run_on(CFG, t))
        sw = SiteWindows.from_state(sw.to_state())  # a state stored and read back
    ingest()
    assert verdicts == want_verdicts
    assert windows == want_windows
