"""Synthetic feeds for the benchmark: traffic and air, as frames or single readings.

Deterministic (seeded), far in the past (no reading is ``future``), each site's readings in
time order, sites interleaved round-robin as many sensors publishing at once would be.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson

#: 2023-11-14 21:00:00 UTC, a multiple of 3600 s.
T0 = 1_699_995_600
ALLOWED_LATENESS_S = 30.0
CLASSES = np.array(["car", "car", "car", "lgv", "hgv", "bus"])

Msg = tuple[bytes, bytes]


def site_ids(tag: str, n: int) -> list[str]:
    """Site ids unique to one run (the store is shared between runs)."""
    return [f"bench-{tag}-{i:05d}" for i in range(n)]


def _traffic_rows(rng: np.random.Generator, n: int, t0: float, span: float) -> dict[str, list]:
    ts = (t0 + np.sort(rng.uniform(0, span, n))).round(3)
    return {
        "ts": ts.tolist(),
        "lane": rng.integers(1, 4, n).tolist(),
        "speed_kph": rng.normal(85, 15, n).clip(1, 160).round(1).tolist(),
        "class": CLASSES[rng.integers(0, CLASSES.size, n)].tolist(),
    }


def traffic_frames(sites: list[str], frames_per_site: int, rows: int, seed: int,
                   span_s: float = 600.0) -> Iterator[Msg]:
    """``frames_per_site`` frames of ``rows`` vehicles per site, each frame ``span_s`` long."""
    rng = np.random.default_rng(seed)
    for k in range(frames_per_site):
        for site in sites:
            cols = _traffic_rows(rng, rows, T0 + k * span_s, span_s)
            yield site.encode(), orjson.dumps({"site_id": site, "columns": cols})


def traffic_singles(sites: list[str], per_site: int, seed: int,
                    gap_s: float = 20.0) -> Iterator[Msg]:
    """``per_site`` single readings per site, ``gap_s`` apart, sites interleaved."""
    rng = np.random.default_rng(seed)
    n = len(sites) * per_site
    speed = rng.normal(85, 15, n).clip(1, 160).round(1).tolist()
    lane = rng.integers(1, 4, n).tolist()
    cls = CLASSES[rng.integers(0, CLASSES.size, n)].tolist()
    j = 0
    for k in range(per_site):
        for s, site in enumerate(sites):
            ts = round(T0 + k * gap_s + (s % 1000) * gap_s / 1000, 3)
            yield site.encode(), orjson.dumps({"site_id": site, "ts": ts, "lane": lane[j],
                                               "speed_kph": speed[j], "class": cls[j]})
            j += 1


def _air_rows(rng: np.random.Generator, n: int, t0: float, gap: float) -> dict[str, list]:
    return {
        "ts": (t0 + np.arange(n) * gap).tolist(),
        "no2_ugm3": rng.gamma(4, 8, n).round(1).tolist(),
        "o3_ugm3": rng.gamma(5, 10, n).round(1).tolist(),
        "pm25_ugm3": rng.gamma(3, 4, n).round(1).tolist(),
        "pm10_ugm3": rng.gamma(3, 7, n).round(1).tolist(),
        "temperature_c": rng.normal(12, 3, n).round(1).tolist(),
    }


def air_frames(sites: list[str], frames_per_site: int, rows: int, seed: int,
               gap_s: float = 10.0) -> Iterator[Msg]:
    """Frames of ``rows`` air samples per site, one sample every ``gap_s`` seconds."""
    rng = np.random.default_rng(seed)
    for k in range(frames_per_site):
        for site in sites:
            cols = _air_rows(rng, rows, T0 + k * rows * gap_s, gap_s)
            yield site.encode(), orjson.dumps({"site_id": site, "columns": cols})


def air_singles(sites: list[str], per_site: int, seed: int, gap_s: float = 60.0) -> Iterator[Msg]:
    """Single air samples, one per site every ``gap_s`` seconds, sites interleaved."""
    rng = np.random.default_rng(seed)
    for k in range(per_site):
        for site in sites:
            row = {name: v[0] for name, v in _air_rows(rng, 1, T0 + k * gap_s, gap_s).items()}
            yield site.encode(), orjson.dumps({"site_id": site, **row})


def traffic_windows_closed(messages: list[Msg]) -> int:
    """Windows (1 min and 15 min) the watermark closes for a traffic feed, idle flush aside.

    Each (site, window) is one aggregate, so this is what the sink must write.
    """
    lo: dict[bytes, float] = {}
    hi: dict[bytes, float] = {}
    for key, value in messages:
        obj = orjson.loads(value)
        ts = obj["columns"]["ts"] if "columns" in obj else [obj["ts"]]
        lo[key] = min(lo.get(key, np.inf), min(ts))
        hi[key] = max(hi.get(key, -np.inf), max(ts))
    total = 0
    for key, first in lo.items():
        for size in (60, 900):
            start = np.floor(first / size) * size
            edge = np.floor((hi[key] - ALLOWED_LATENESS_S) / size) * size
            total += max(0, int(np.rint((edge - start) / size)))
    return total
