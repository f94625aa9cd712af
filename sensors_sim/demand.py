"""Traffic demand and the minute-by-minute state of one detector site over one UTC day.

Demand: the site's AADT (registry) spread over the UK local day by hourly profiles for cars
and HGVs, weekday or weekend, with a day-to-day factor. State: a queue (Lindley recursion)
against the capacity of the carriageway, and speed from a fundamental diagram — a
speed-flow curve while traffic flows freely, the congested branch of a triangular diagram
while a queue stands, and a speed collapse to 10–30 km/h during an incident.
Every array is one value per minute; flows in vehicles/hour for the whole carriageway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from thurrock_streams.registry import TrafficSite

from ._seeds import Stream, rng_for, site_key
from .clock import DAY_S, uk_offset_s

__all__ = ["CAPACITY_PCU", "DayState", "congested_speed", "day_state", "free_speed"]

F64 = NDArray[np.float64]

# Share of the day's traffic in each local hour (percent; normalised below), typical UK
# weekday and weekend patterns: AM peak 07-09, PM peak 16-19, HGVs flatter and earlier.
_CAR_WEEKDAY = [0.7, 0.45, 0.35, 0.35, 0.55, 1.4, 3.6, 6.6, 7.0, 5.6, 5.1, 5.2,
                5.4, 5.5, 5.8, 6.6, 7.4, 7.6, 6.3, 4.5, 3.4, 2.8, 2.1, 1.4]
_CAR_WEEKEND = [1.3, 0.9, 0.6, 0.5, 0.5, 0.8, 1.5, 2.5, 3.8, 5.3, 6.6, 7.4,
                7.6, 7.5, 7.2, 7.0, 6.7, 6.2, 5.4, 4.4, 3.5, 2.9, 2.3, 1.7]
_HGV_WEEKDAY = [2.2, 2.0, 2.0, 2.2, 2.8, 3.8, 4.8, 5.4, 5.6, 5.7, 5.8, 5.8,
                5.6, 5.5, 5.4, 5.1, 4.6, 4.0, 3.5, 3.1, 2.8, 2.6, 2.5, 2.3]
#: Day-of-week factors (Monday first), averaging 1 over the week.
_CAR_DOW = np.array([1.02, 1.04, 1.05, 1.06, 1.08, 0.92, 0.83])
_HGV_DOW = np.array([1.20, 1.22, 1.22, 1.20, 1.12, 0.60, 0.44])

#: Capacity per lane in passenger-car units per hour, by road class (an HGV is 2 PCU).
CAPACITY_PCU = {"motorway": 2000.0, "trunk_dual": 1900.0, "dual": 1800.0,
                "single": 1500.0, "urban": 1000.0}
HGV_PCU = 2.0
JAM_DENSITY = 130.0  # vehicles per km per lane
WAVE_SPEED = 20.0  # backward wave speed of the congested branch, km/h
DISCHARGE = 0.9  # capacity drop: a queue discharges at 90% of capacity
INCIDENTS_PER_DAY = {"motorway": 0.25, "trunk_dual": 0.15, "dual": 0.08,
                     "single": 0.05, "urban": 0.03}


def _profile(values: list[float]) -> F64:
    arr = np.asarray(values, dtype=float)
    return arr / arr.sum()


_PROFILES = {
    "car": (_profile(_CAR_WEEKDAY), _profile(_CAR_WEEKEND)),
    "hgv": (_profile(_HGV_WEEKDAY), 0.5 * _profile(_HGV_WEEKDAY) + 0.5 / 24),
}


def _hourly(profile: F64, hour: F64) -> F64:
    """Interpolate an hourly profile (values at hour midpoints) at fractional hours."""
    xs = np.arange(-0.5, 25.0)
    ys = np.concatenate(([profile[-1]], profile, [profile[0]]))
    return np.interp(hour, xs, ys)


def free_speed(flow_pcu_lane: F64, vf: float, capacity: F64 | float) -> F64:
    """Mean speed on the free-flow branch: vf at zero flow, 0.75 vf at capacity.

    >>> free_speed(np.array([0.0, 2000.0]), 100.0, 2000.0).tolist()
    [100.0, 75.0]
    """
    x = np.clip(flow_pcu_lane / capacity, 0.0, 1.0)
    return vf * (1.0 - 0.25 * x**2.5)


def congested_speed(flow_pcu_lane: F64 | float) -> F64:
    """Mean speed on the congested branch of the triangular diagram at a given lane flow.

    Density k = k_jam − q / w, speed = q / k.

    >>> round(float(congested_speed(1800.0)), 1)
    45.0
    """
    q = np.asarray(flow_pcu_lane, dtype=float)
    return q / (JAM_DENSITY - q / WAVE_SPEED)


def incident_flow(speed: F64 | float) -> F64:
    """Lane flow (PCU/h) on the congested branch that goes with a given speed."""
    v = np.asarray(speed, dtype=float)
    return JAM_DENSITY * WAVE_SPEED * v / (v + WAVE_SPEED)


@dataclass(frozen=True)
class DayState:
    """Minute-by-minute state of one site over one UTC day (1,440 values per array)."""

    t0: float
    car_vph: F64
    hgv_vph: F64
    speed_kph: F64
    incident: NDArray[np.bool_]

    @property
    def congestion(self) -> F64:
        """Queue-driven slowdown, 0 (free) .. 1 (standstill), from the speed."""
        return np.clip(1.0 - self.speed_kph / self.speed_kph.max(initial=1.0), 0.0, 1.0)


def _demand(site: TrafficSite, t: F64, rng: np.random.Generator, scale: float) -> tuple[F64, F64]:
    local = t + uk_offset_s(t)
    hour = (local % DAY_S) / 3600.0
    dow = ((local // DAY_S).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    weekend = dow >= 5
    port = site.hgv_share >= 0.3  # ports run at weekends too
    day_factor = float(rng.lognormal(0.0, 0.06)) * scale
    out = []
    for kind, share, dow_f in (("car", 1.0 - site.hgv_share, _CAR_DOW),
                               ("hgv", site.hgv_share, _HGV_DOW)):
        wd, we = _PROFILES[kind]
        prof = np.where(weekend, _hourly(we, hour), _hourly(wd, hour))
        f = dow_f[dow]
        if kind == "hgv" and port:
            f = 0.5 * f + 0.5
        out.append(site.aadt * share * prof * f * day_factor)
    return out[0], out[1]


def _incidents(site: TrafficSite, t0: float, seed: int, demand: F64) -> tuple[F64, F64]:
    """Per-minute speed cap (inf when none) and capacity factor from the day's incidents."""
    rng = rng_for(seed, site_key(site.site_id), Stream.INCIDENTS, int(t0 // DAY_S))
    cap = np.full(demand.shape, np.inf)
    open_share = np.ones(demand.shape)
    n = int(rng.poisson(INCIDENTS_PER_DAY[site.road_class]))
    if n == 0:
        return cap, open_share
    weight = demand + demand.mean()  # incidents happen more where there is traffic
    starts = rng.choice(demand.size, size=n, p=weight / weight.sum())
    for start, dur, v, share in zip(starts, rng.uniform(20, 60, n), rng.uniform(10, 30, n),
                                    rng.uniform(0.35, 0.65, n), strict=True):
        sl = slice(int(start), int(start + dur))
        cap[sl] = np.minimum(cap[sl], v)
        open_share[sl] = np.minimum(open_share[sl], share)
    return cap, open_share


def day_state(site: TrafficSite, day: int, seed: int, scale: float = 1.0) -> DayState:
    """Compute the state of a site for UTC day number ``day`` (days since 1970-01-01)."""
    t0 = float(day * DAY_S)
    t = t0 + 60.0 * np.arange(1440, dtype=np.float64)
    car, hgv = _demand(site, t, rng_for(seed, site_key(site.site_id), Stream.DAY, day), scale)
    pcu_per_veh = (car + HGV_PCU * hgv) / np.maximum(car + hgv, 1e-9)
    demand_pcu = car + HGV_PCU * hgv
    vcap, open_share = _incidents(site, t0, seed, demand_pcu)
    c_lane = CAPACITY_PCU[site.road_class]
    server = np.where(np.isfinite(vcap), incident_flow(np.minimum(vcap, 1e3)) * open_share,
                      DISCHARGE * c_lane) * site.lanes
    # Lindley recursion Q_m = max(0, Q_{m-1} + d_m - c_m), vectorised (PCU per minute).
    s = np.cumsum((demand_pcu - server) / 60.0)
    queue = s - np.minimum(np.minimum.accumulate(s), 0.0)
    queued = queue > 1e-9
    served_pcu = np.where(queued, server, demand_pcu)
    flow_lane = served_pcu / site.lanes
    speed = np.where(queued, congested_speed(flow_lane),
                     free_speed(flow_lane, 0.98 * site.free_flow_kph, c_lane))
    # At an incident traffic crawls past the scene at the incident's speed, queue or not.
    speed = np.where(np.isfinite(vcap), vcap, speed)
    veh = served_pcu / pcu_per_veh
    hgv_frac = hgv / np.maximum(car + hgv, 1e-9)
    return DayState(t0=t0, car_vph=veh * (1 - hgv_frac), hgv_vph=veh * hgv_frac,
                    speed_kph=speed, incident=np.isfinite(vcap))
