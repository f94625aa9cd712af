"""Rare, seeded pollution episodes that push a pollutant across DAQI bands.

Regional episodes are shared by every monitor (one weather): a PM episode (secondary
aerosol or Saharan dust, PM2.5 +30–45 µg/m³ for 18–40 h, so the 24-h mean passes 35 µg/m³,
DAQI Moderate) and, from April to September, an afternoon ozone episode (+60–90 µg/m³,
8-h mean above 100). Local episodes belong to one monitor: a still-air NO2 build-up
(+190–260 µg/m³ at its peak for 2–5 h, 1-h mean above 200) and, at monitors that measure
SO2, a ship plume (+350–550 µg/m³ for 30–60 min, 15-min mean above 266). Each kind happens
on a day with a small probability (per-day rates below, times ``scale``); episodes are drawn
per UTC day, so a time range sees the same episodes however it is cut.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from thurrock_streams.registry import AirMonitor

from ._seeds import REGION_KEY, Stream, rng_for, site_key
from .clock import DAY_S

__all__ = ["RATES_PER_DAY", "episode_levels"]

F64 = NDArray[np.float64]

#: Expected episodes per day, per kind (regional) or per monitor (local).
RATES_PER_DAY = {"pm": 0.05, "o3": 0.05, "no2": 0.04, "so2": 0.05}
_SHAPES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # kind: (duration range h, amplitude range µg/m³)
    "pm": ((18.0, 40.0), (30.0, 45.0)),
    "o3": ((8.0, 10.0), (60.0, 90.0)),
    "no2": ((2.0, 5.0), (190.0, 260.0)),
    "so2": ((0.5, 1.0), (350.0, 550.0)),
}
_LOOKBACK_DAYS = 2  # the longest episode (40 h) started at most this many days earlier


def _draw(rng: np.random.Generator, kind: str, day: int, scale: float
          ) -> Iterator[tuple[float, float, float]]:
    """Yield (start, duration s, amplitude) of the episodes of one kind starting on a day."""
    (d_lo, d_hi), (a_lo, a_hi) = _SHAPES[kind]
    n = int(rng.poisson(RATES_PER_DAY[kind] * scale)) if scale > 0 else 0
    for _ in range(n):
        start = day * DAY_S + float(rng.uniform(0, DAY_S))
        if kind == "o3":  # afternoon build-up, around 10:00 UTC
            start = day * DAY_S + float(rng.uniform(8, 11)) * 3600.0
        yield start, float(rng.uniform(d_lo, d_hi)) * 3600.0, float(rng.uniform(a_lo, a_hi))


def _bell(ts: F64, start: float, dur: float) -> F64:
    """A smooth hump: 0 outside [start, start+dur), sin² inside."""
    x = (ts - start) / dur
    return np.where((x >= 0) & (x < 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 2, 0.0)


def _plateau(ts: F64, start: float, dur: float) -> F64:
    """A 3-hour ramp up, a plateau, a 3-hour ramp down."""
    ramp = 3 * 3600.0
    up = np.clip((ts - start) / ramp, 0, 1)
    down = np.clip((start + dur - ts) / ramp, 0, 1)
    return np.minimum(up, down)


def episode_levels(monitor: AirMonitor, seed: int, ts: F64, hour: F64,
                   scale: float = 1.0) -> dict[str, F64]:
    """Return the episode increment of each pollutant at each sample time (µg/m³).

    ``hour`` is the local hour of each sample (unused today; kept for seasonal rules).
    Ordinary ship plumes at port monitors are not episodes: ``scale`` does not touch them.
    """
    del hour
    out = {p: np.zeros(ts.size) for p in ("no2", "o3", "so2", "pm25", "pm10", "co")}
    if ts.size == 0:
        return out
    first, last = int(ts.min() // DAY_S) - _LOOKBACK_DAYS, int(ts.max() // DAY_S)
    for day in range(first, last + 1):
        region = rng_for(seed, REGION_KEY, Stream.EPISODES, day)
        for start, dur, amp in _draw(region, "pm", day, scale):
            shape = _plateau(ts, start, dur)
            out["pm25"] += amp * shape
            out["pm10"] += 1.3 * amp * shape
        month = int((day % 365.25) // 30.5)  # 0 = January, close enough
        for start, dur, amp in _draw(region, "o3", day, scale if 3 <= month <= 8 else 0.0):
            out["o3"] += amp * _bell(ts, start, dur)
        local = rng_for(seed, site_key(monitor.site_id), Stream.EPISODES, day)
        for start, dur, amp in _draw(local, "no2", day, scale):
            out["no2"] += amp * _bell(ts, start, dur)
        if "so2" in monitor.pollutants:
            for start, dur, amp in _draw(local, "so2", day, scale):
                out["so2"] += amp * _bell(ts, start, dur)
        if monitor.near_port:  # everyday ship plumes, well below the bands' edges
            for start, dur, amp in _draw_plumes(local):
                out["so2"] += amp * _bell(ts, start + day * DAY_S, dur)
    return out


def _draw_plumes(rng: np.random.Generator) -> Iterator[tuple[float, float, float]]:
    """Yield (offset in day s, duration s, amplitude) of ordinary ship plumes (about 3 a day)."""
    for _ in range(int(rng.poisson(3.0))):
        yield float(rng.uniform(0, DAY_S)), float(rng.uniform(600, 2400)), float(
            rng.uniform(10, 60))
