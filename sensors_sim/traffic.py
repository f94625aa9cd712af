"""Per-vehicle detections: arrivals, lanes, classes, lengths and speeds of one site.

Arrivals are a non-homogeneous Poisson process with the minute-by-minute flow of
:mod:`sensors_sim.demand` (piecewise constant per minute). Each vehicle gets a class, a
length plausible for its class, a lane (HGVs keep to lanes 1–2, lane 1 being nearside)
and a speed around the minute's mean speed with a spread of about 9%; HGVs are held near
their 56 mph (90 km/h) limiter. Generation is vectorised per hour and seeded per
(site, hour), so any time range of a site is the same whatever else is generated.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from thurrock_streams.registry import TrafficSite

from ._seeds import Stream, rng_for, site_key
from .batch import TRAFFIC_TOPIC, Batch, concat
from .clock import DAY_S
from .demand import DayState, day_state

__all__ = ["CLASSES", "lane_weights", "simulate_traffic"]

F64 = NDArray[np.float64]

CLASSES = ("car", "lgv", "hgv", "bus", "motorcycle", "other")
_HGV = 2
# Shares of the non-HGV traffic: car, lgv, -, bus, motorcycle, other.
_NON_HGV_SHARE = np.array([0.815, 0.15, 0.0, 0.01, 0.02, 0.005])
#: Length (m) by class: mean, sd, low, high. HGV lengths come from a mixture below.
_LENGTH = np.array([[4.4, 0.35, 3.5, 5.0], [5.8, 0.45, 5.0, 7.0], [0, 0, 0, 0],
                    [12.0, 0.8, 10.0, 15.0], [2.25, 0.15, 2.0, 2.5], [7.5, 1.2, 5.5, 10.0]])
#: Mean-speed factor by class relative to cars.
_CLASS_SPEED = np.array([1.0, 0.97, 1.0, 0.92, 1.04, 0.88])
HGV_LIMITER_KPH = 90.0
_HGV_MEAN_CAP = {"motorway": 86.0, "trunk_dual": 85.0, "dual": 84.0, "single": 78.0,
                 "urban": 60.0}
SPEED_SD = 0.09


def lane_weights(lanes: int, hgv: bool) -> F64:
    """Lane-use shares, lane 1 (nearside) first."""
    if lanes == 1:
        return np.ones(1)
    if hgv:  # HGVs may not use lane 3+ of a motorway with three or more lanes
        w = np.zeros(lanes)
        w[:2] = (0.8, 0.2) if lanes == 2 else (0.7, 0.3)
        return w
    w = np.concatenate(([0.6], np.ones(lanes - 1)))
    w[-1] = 0.85
    return w / w.sum()


def _lengths(cls: NDArray[np.int8], rng: np.random.Generator) -> F64:
    p = _LENGTH[cls]
    length = np.clip(p[:, 0] + p[:, 1] * rng.standard_normal(cls.size), p[:, 2], p[:, 3])
    hgv = cls == _HGV
    u = rng.random(int(hgv.sum()))
    rigid, artic = rng.uniform(10.0, 12.0, u.size), rng.uniform(15.5, 16.5, u.size)
    drawbar = rng.uniform(18.0, 18.75, u.size)
    length[hgv] = np.where(u < 0.35, rigid, np.where(u < 0.95, artic, drawbar))
    return length


def _hour(site: TrafficSite, state: DayState, hour: int, seed: int) -> Batch:
    """Detections of one UTC hour (``hour`` = hours since the epoch)."""
    rng = rng_for(seed, site_key(site.site_id), Stream.VEHICLES, hour)
    m0 = (hour * 3600 - int(state.t0)) // 60
    sl = slice(m0, m0 + 60)
    car, hgv, v = state.car_vph[sl], state.hgv_vph[sl], state.speed_kph[sl]
    counts = rng.poisson((car + hgv) / 60.0)
    minute = np.repeat(np.arange(60), counts)
    n = minute.size
    ts = hour * 3600.0 + 60.0 * (minute + rng.random(n))
    order = np.argsort(ts, kind="stable")
    ts, minute = ts[order], minute[order]
    p_hgv = (hgv / np.maximum(car + hgv, 1e-9))[minute]
    cum = np.cumsum(_NON_HGV_SHARE)
    cls = np.searchsorted(cum, rng.random(n) * cum[-1], side="right").astype(np.int8)
    cls[rng.random(n) < p_hgv] = _HGV
    heavy = (cls == _HGV) | (cls == 3)
    lane = np.empty(n, dtype=np.int64)
    for is_heavy in (False, True):
        sel = heavy == is_heavy
        w = lane_weights(site.lanes, is_heavy)
        lane[sel] = 1 + np.searchsorted(np.cumsum(w), rng.random(int(sel.sum())) * w.sum(),
                                        side="right")
    lane = np.minimum(lane, site.lanes)
    vm = v[minute]
    free = vm / (0.98 * site.free_flow_kph)  # lane spread only while traffic flows freely
    mean = vm * _CLASS_SPEED[cls] * (1.0 + 0.04 * free * (lane - (site.lanes + 1) / 2))
    mean = np.where(heavy, np.minimum(mean, _HGV_MEAN_CAP[site.road_class]), mean)
    speed = mean * (1.0 + SPEED_SD * rng.standard_normal(n))
    speed = np.where(heavy, np.minimum(speed, HGV_LIMITER_KPH + 2.0 * (cls == 3)), speed)
    speed = np.clip(speed, 1.0, 200.0)
    return Batch(TRAFFIC_TOPIC, site.site_id, {
        "ts": np.round(ts, 3),
        "lane": lane,
        "speed_kph": np.round(speed, 1),
        "length_m": np.round(_lengths(cls, rng), 2),
        "class": np.asarray(CLASSES)[cls],
    })


def simulate_traffic(site: TrafficSite, start: float, end: float, seed: int,
                     scale: float = 1.0) -> Batch:
    """Simulate every vehicle passing ``site`` with ``start <= ts < end``.

    ``scale`` multiplies demand (1.0 = the registry's AADT).
    """
    states: dict[int, DayState] = {}
    hours = []
    for hour in range(int(start // 3600), int(-(-end // 3600))):
        day = hour * 3600 // DAY_S
        if day not in states:
            states[day] = day_state(site, day, seed, scale)
        hours.append(_hour(site, states[day], hour, seed))
    return concat(hours).window(start, end)
