"""Air-quality samples of one monitor: traffic-driven NO2 and PM, O3, port SO2 and CO.

NO2 = background (about 15–25 µg/m³, higher in winter) + a roadside increment that grows
with the emissions of the monitor's nearby traffic detectors (an HGV counts as ten cars,
queues add half again) and saturates with distance-like dilution; both are scaled by a
dispersion factor (stagnant nights, well-mixed afternoons, a shared regional weather
state). O3 is regional with an afternoon peak, titrated by NO2 (anti-correlated). PM2.5
and PM10 add a regional background to a smaller traffic share. SO2 and CO rise near ports
(ship plumes). Rare seeded episodes push a pollutant across DAQI bands. See
docs/simulator.md for the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from thurrock_streams.registry import AirMonitor, TrafficSite

from ._seeds import REGION_KEY, Stream, rng_for, site_key
from .batch import AIR_TOPIC, Batch
from .clock import DAY_S, uk_offset_s
from .demand import day_state
from .episodes import episode_levels

__all__ = ["FIELDS", "sample_times", "simulate_air"]

F64 = NDArray[np.float64]

#: Output field of each pollutant, in output order.
FIELDS = {"no2": "no2_ugm3", "o3": "o3_ugm3", "so2": "so2_ugm3", "pm25": "pm25_ugm3",
          "pm10": "pm10_ugm3", "co": "co_mgm3"}
HGV_WEIGHT = 10.0
ROAD_NO2_MAX = 32.0  # µg/m³ roadside increment as emissions grow without bound
ROAD_HALF = 5000.0  # car-equivalents per hour at which the increment is half its maximum


def sample_times(start: float, end: float, interval_s: float) -> F64:
    """Sample instants: multiples of ``interval_s`` since the epoch in ``[start, end)``.

    >>> sample_times(0.0, 200.0, 60.0).tolist()
    [0.0, 60.0, 120.0, 180.0]
    """
    first = np.ceil(start / interval_s) * interval_s
    return first + interval_s * np.arange(max(0, int(np.ceil((end - first) / interval_s))))


def _knots(seed: int, key: int, stream: Stream, ts: F64, step_s: float, nvars: int) -> F64:
    """Smooth noise: standard-normal knots every ``step_s`` seeded per day, interpolated."""
    per_day = int(DAY_S // step_s)
    k = np.floor(ts / step_s).astype(np.int64)
    days: dict[int, F64] = {}
    for day in np.unique(np.concatenate((k // per_day, (k + 1) // per_day))).tolist():
        days[day] = rng_for(seed, key, stream, day).standard_normal((per_day, nvars))

    def at(idx: NDArray[np.int64]) -> F64:
        out = np.empty((idx.size, nvars))
        for day, arr in days.items():
            sel = idx // per_day == day
            out[sel] = arr[idx[sel] % per_day]
        return out

    frac = (ts / step_s - k)[:, None]
    return (1.0 - frac) * at(k) + frac * at(k + 1)


def _white(seed: int, key: int, ts: F64, interval_s: float, nvars: int) -> F64:
    """Sample-to-sample noise, standard normal, drawn per UTC day and slot within it."""
    out = np.empty((ts.size, nvars))
    per_day = int(np.ceil(DAY_S / interval_s)) + 1
    days = np.floor(ts / DAY_S).astype(np.int64)
    for day in np.unique(days).tolist():
        sel = days == day
        draws = rng_for(seed, key, Stream.AIR_NOISE, day).standard_normal((per_day, nvars))
        out[sel] = draws[np.floor((ts[sel] - day * DAY_S) / interval_s).astype(np.int64)]
    return out


def _emissions(sites: Sequence[TrafficSite], ts: F64, seed: int, scale: float) -> F64:
    """Car-equivalent vehicles per hour past the monitor (HGVs x10, queues x1.5)."""
    total = np.zeros(ts.size)
    days = np.floor(ts / DAY_S).astype(np.int64)
    for site in sites:
        for day in np.unique(days).tolist():
            st = day_state(site, day, seed, scale)
            sel = days == day
            grid = st.t0 + 60.0 * np.arange(1440) + 30.0
            e = (st.car_vph + HGV_WEIGHT * st.hgv_vph) * (1.0 + 0.5 * st.congestion)
            total[sel] += np.interp(ts[sel], grid, e)
    return total


def _cos(hour: F64, peak: float) -> F64:
    return np.cos(2 * np.pi * (hour - peak) / 24.0)


def simulate_air(monitor: AirMonitor, nearby: Sequence[TrafficSite], start: float, end: float,
                 seed: int, interval_s: float = 60.0, scale: float = 1.0,
                 episode_scale: float = 1.0) -> Batch:
    """Simulate the samples of ``monitor`` in ``[start, end)``, one every ``interval_s``.

    Only the pollutants the monitor measures are in the batch, plus temperature and humidity.
    """
    ts = sample_times(start, end, interval_s)
    key = site_key(monitor.site_id)
    local = ts + uk_offset_s(ts)
    hour = (local % DAY_S) / 3600.0
    doy = (ts / DAY_S) % 365.25  # day of year, close enough for seasons
    winter = 1.0 + 0.22 * np.cos(2 * np.pi * (doy - 15) / 365.25)
    summer = np.cos(2 * np.pi * (doy - 160) / 365.25)
    w = _knots(seed, REGION_KEY, Stream.WEATHER, ts, 6 * 3600.0, 4)  # disp, pm, o3, temp
    n = _knots(seed, key, Stream.AIR_KNOTS, ts, 3600.0, 5)  # no2, pm, o3, so2, co
    disp = np.exp(0.25 * w[:, 0]) * (1.0 + 0.22 * _cos(hour, 3.0))
    e = _emissions(nearby, ts, seed, scale)
    road = ROAD_NO2_MAX * e / (e + ROAD_HALF) * disp * np.exp(0.15 * n[:, 0])
    bg_no2 = 19.0 * winter * np.exp(0.2 * w[:, 0]) * (1.0 + 0.12 * _cos(hour, 8.0))
    pm_bg = 8.5 * np.exp(0.3 * w[:, 1] + 0.1 * n[:, 1])
    o3_reg = (50.0 + 12.0 * summer) * (1.0 + 0.3 * _cos(hour, 15.0)) * np.exp(0.15 * w[:, 2])
    port = 1.0 if monitor.near_port else 0.0
    ep = episode_levels(monitor, seed, ts, hour, episode_scale)
    no2 = bg_no2 + road + ep["no2"]
    values = {
        "no2": no2,
        "o3": np.maximum(2.0, o3_reg + ep["o3"] - 0.5 * (no2 - 15.0) + 3.0 * n[:, 2]),
        "so2": (2.0 + 2.5 * port) * np.exp(0.25 * n[:, 3]) + ep["so2"],
        "pm25": pm_bg + 0.1 * road + ep["pm25"],
        "pm10": 1.6 * pm_bg + 0.25 * road + ep["pm10"],
        "co": 0.2 + 0.05 * port + 0.25 * e / (e + ROAD_HALF) * disp * np.exp(0.1 * n[:, 4]),
    }
    white = _white(seed, key, ts, interval_s, len(FIELDS) + 2)
    cols: dict[str, NDArray[Any]] = {"ts": ts}
    for i, pol in enumerate(FIELDS):
        if pol in monitor.pollutants:
            noisy = np.maximum(0.0, values[pol] * (1.0 + 0.03 * white[:, i]))
            cols[FIELDS[pol]] = np.round(noisy, 2 if pol == "co" else 1)
    season_t = 11.0 - 6.5 * np.cos(2 * np.pi * (doy - 20) / 365.25)
    swing = 4.0 * _cos(hour, 15.0) + 2.0 * w[:, 3]
    temp = season_t + swing + 0.1 * white[:, -2]
    hum = 76.0 - 3.0 * swing + 0.5 * white[:, -1]
    cols["temperature_c"] = np.round(np.clip(temp, -20.0, 40.0), 1)
    cols["humidity_pct"] = np.round(np.clip(hum, 25.0, 100.0), 1)
    return Batch(AIR_TOPIC, monitor.site_id, cols)
