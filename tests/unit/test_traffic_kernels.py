"""Traffic kernels against slow, obvious references (CONTRACT.md §4, DOMAIN.md §4)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thurrock_streams.kernels.traffic import grouped_percentile, traffic_windows

speeds = st.floats(0, 250, allow_nan=False) | st.sampled_from([0.0, 0.1, 250.0])
vehicle = st.tuples(st.integers(0, 5), speeds, st.sampled_from([-1, 0, 1, 2, 3]))


def reference(vehicles, n, size, free_flow):
    rows = []
    for w in range(n):
        v = [s for (g, s, _) in vehicles if g == w]
        cls = [c for (g, _, c) in vehicles if g == w]
        pos = [s for s in v if s > 0]
        sms = len(pos) / sum(1 / s for s in pos) if pos else None
        flow = len(v) * 3600 / size
        rows.append({
            "count": len(v), "flow_vph": flow,
            "mean_speed_kph": statistics.fmean(v) if v else None,
            "space_mean_speed_kph": sms,
            "p85_speed_kph": float(np.percentile(v, 85)) if v else None,
            "hgv_pct": 100 * cls.count(2) / len(v) if v else None,
            "density_vpkm": flow / sms if sms and math.isfinite(flow / sms) else None,
            "congestion_index": min(1, max(0, 1 - sms / free_flow)) if sms is not None else None,
        })
    return rows


@given(vehicles=st.lists(vehicle, max_size=80), size=st.sampled_from([60, 900]),
       free_flow=st.sampled_from([48.0, 100.0, 113.0]))
def test_kernels_match_reference(vehicles, size, free_flow) -> None:
    n = 6
    g = np.array([v[0] for v in vehicles], dtype=np.int64)
    s = np.array([v[1] for v in vehicles], dtype=np.float64)
    c = np.array([v[2] for v in vehicles], dtype=np.int8)
    got = traffic_windows(g, s, c, n, size, free_flow)
    for w, want in enumerate(reference(vehicles, n, size, free_flow)):
        for name, value in want.items():
            x = getattr(got, name)[w]
            if value is None:
                assert np.isnan(x), (name, w)
            else:
                assert x == pytest.approx(value, rel=1e-12, abs=1e-12), (name, w)


@given(values=st.lists(st.floats(0, 250, allow_nan=False), max_size=50),
       q=st.sampled_from([0.0, 50.0, 85.0, 100.0]))
def test_grouped_percentile_is_numpy_percentile_bit_for_bit(values, q) -> None:
    rng = np.random.default_rng(len(values))
    group = rng.integers(0, 3, size=len(values))
    got = grouped_percentile(np.array(values), group, 3, q)
    for k in range(3):
        vs = [v for v, g in zip(values, group, strict=True) if g == k]
        if vs:
            assert got[k] == np.percentile(vs, q)
        else:
            assert np.isnan(got[k])


@given(values=st.lists(st.sampled_from([-0.0, 0.0, 0.1, 12.5, 12.5, 80.0, 249.9]),
                       max_size=60),
       q=st.sampled_from([0.0, 50.0, 85.0, 100.0]), groups=st.integers(1, 6))
def test_grouped_percentile_with_ties_and_signed_zeros_is_numpy_to_the_bit(
        values: list[float], q: float, groups: int) -> None:
    rng = np.random.default_rng(len(values) + groups)
    group = rng.integers(0, groups, size=len(values))
    got = grouped_percentile(np.array(values, dtype=np.float64), group, groups, q)
    for k in range(groups):
        vs = [v for v, g in zip(values, group, strict=True) if g == k]
        want = np.percentile(vs, q) if vs else np.nan
        if any(math.copysign(1.0, v) < 0 for v in vs):
            # numpy's own interpolation gives -0.0 for [-0.0] where a + (b - a) * t makes
            # it 0.0: the kernel's zero may lose its sign, never its value.
            assert got[k] == want, (k, vs)
        else:
            assert np.float64(got[k]).tobytes() == np.float64(want).tobytes(), (k, vs)


def test_hand_computed_window() -> None:
    # Speeds 40, 60, 80, 0 km/h; one HGV; 1-minute window; free flow 100 km/h.
    w = traffic_windows(np.zeros(4, dtype=np.int64), np.array([40.0, 60.0, 80.0, 0.0]),
                        np.array([0, 2, 0, 1], dtype=np.int8), 1, 60, 100.0)
    assert w.count.tolist() == [4]
    assert w.flow_vph.tolist() == [240.0]
    assert w.mean_speed_kph.tolist() == [45.0]
    # harmonic mean of the speeds > 0: 3 / (1/40 + 1/60 + 1/80) = 55.3846...
    assert w.space_mean_speed_kph[0] == pytest.approx(3 / (1 / 40 + 1 / 60 + 1 / 80))
    # V85: (n-1)*0.85 = 2.55 between sorted[2]=60 and sorted[3]=80 -> 71.0
    assert w.p85_speed_kph[0] == pytest.approx(71.0)
    assert w.hgv_pct.tolist() == [25.0]
    assert w.density_vpkm[0] == pytest.approx(240.0 / w.space_mean_speed_kph[0])
    assert w.congestion_index[0] == pytest.approx(1 - w.space_mean_speed_kph[0] / 100.0)


def test_only_stopped_vehicles_leave_space_mean_speed_undefined() -> None:
    w = traffic_windows(np.array([0, 0]), np.array([0.0, 0.0]), np.array([-1, -1], np.int8),
                        2, 60, 100.0)
    assert w.count.tolist() == [2, 0]
    assert np.isnan(w.space_mean_speed_kph).all() and np.isnan(w.congestion_index).all()
    assert w.mean_speed_kph[0] == 0.0 and np.isnan(w.mean_speed_kph[1])
