"""The air pipeline on the engine: means, capture, running means, DAQI (CONTRACT.md §5)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from thurrock_streams.air import AirPipeline
from thurrock_streams.engine.processor import Processor
from thurrock_streams.readings import RawMessage

H = 3600
T0 = 1_699_995_600  # an hour boundary (2023-11-14 21:00 UTC)


def frames(site: str, minutes: range, **values: Any) -> list[dict[str, Any]]:
    """One sample at second 30 of each minute; values are constants or per-minute lists."""
    ts = [T0 + 60 * m + 30 for m in minutes]
    cols: dict[str, Any] = {"ts": ts}
    for name, v in values.items():
        cols[name] = v if isinstance(v, list) else [v] * len(ts)
    return [{"site_id": site, "columns": cols}]


def merged(site: str, series: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """One frame, one row per minute with every pollutant measured in it (None elsewhere)."""
    minutes = sorted({m for per in series.values() for m in per})
    cols: dict[str, Any] = {"ts": [T0 + 60 * m + 30 for m in minutes]}
    for name, per in series.items():
        cols[name] = [per.get(m) for m in minutes]
    return [{"site_id": site, "columns": cols}]


def run(messages: list[dict[str, Any]], flush: bool = True) -> list[dict[str, Any]]:
    proc = Processor(AirPipeline.create(30.0, 300.0))
    raws = [RawMessage("air.readings", 0, i, b"k", json.dumps(m).encode())
            for i, m in enumerate(messages)]
    out = proc.step(raws, {}, now=T0 + 10**7)
    recs = [a for _, a in out.aggregates]
    if flush:
        for site, st in out.changed.items():
            recs += [a for _, a in proc.run_on(site, st, math.inf).aggregates]
    assert proc.counters.readings_in == proc.counters.accepted
    return recs


def pick(recs, pollutant=None, period=None, ts=None, measurement="air_quality"):
    return [r for r in recs if r.get("measurement") == measurement
            and (pollutant is None or r.get("pollutant") == pollutant)
            and (period is None or r.get("period") == period)
            and (ts is None or r["ts"] == ts)]


def test_no2_hourly_mean_banding_at_the_200_boundary() -> None:
    # hour 1: 60 samples averaging 200.49 -> index 3; hour 2: averaging 200.5 -> index 4
    vals = [200.49] * 60 + [200.5] * 60
    recs = run(frames("S", range(120), no2_ugm3=vals))
    h1, h2 = pick(recs, "no2", "1h")
    assert (h1["ts"], h1["mean"], h1["daqi"], h1["valid"], h1["capture_pct"]) == (
        T0 + H, 200.49, 3, True, 100.0)
    assert (h2["mean"], h2["daqi"]) == (200.5, 4)
    daqi = pick(recs, measurement="daqi")
    assert [(d["ts"], d["index"], d["band"], d["pollutant"]) for d in daqi] == [
        (T0 + H, 3, "Low", "no2"), (T0 + 2 * H, 4, "Moderate", "no2")]


def test_capture_45_of_60_minutes_is_valid_44_is_not() -> None:
    minutes = [*range(45), *range(60, 60 + 44), 120]  # hour 3 has one sample (keeps span)
    recs = run(merged("S", {"no2_ugm3": dict.fromkeys(minutes, 40.0)}))
    h1, h2, _ = pick(recs, "no2", "1h")
    assert (h1["capture_pct"], h1["valid"], h1["daqi"]) == (75.0, True, 1)
    assert h2["capture_pct"] == 100 * 44 / 60 and h2["valid"] is False and "daqi" not in h2
    assert h2["mean"] == 40.0  # an invalid mean is still reported, without an index
    q = pick(recs, "no2", "15m")
    assert [r["capture_pct"] for r in q[:4]] == [100.0, 100.0, 100.0, 0.0]
    assert "mean" not in q[3] and q[3]["valid"] is False


def test_o3_running_8h_needs_6_valid_hours_and_averages_only_valid_ones() -> None:
    # 8 hours: hours 0-2 without O3 samples but with NO2 (so the site has readings),
    # hours 3-7 with O3 = 100, then hour 8 with O3 = 130.
    recs = run(merged("S", {
        "no2_ugm3": dict.fromkeys(range(9 * 60), 20.0),
        "o3_ugm3": {m: 100.0 if m < 8 * 60 else 130.0 for m in range(3 * 60, 9 * 60)}}))
    run8 = {r["ts"]: r for r in pick(recs, "o3", "8h")}
    # The O3 series starts at its first sample (hour 3): hours before count as missing.
    first = T0 + 4 * H
    assert min(run8) == first
    at8 = run8[T0 + 8 * H]          # hours 3..7 valid: 5 of 8 -> invalid, no index
    assert (at8["capture_pct"], at8["valid"], at8["mean"]) == (62.5, False, 100.0)
    assert "daqi" not in at8
    at9 = run8[T0 + 9 * H]          # hours 3..8 valid: 6 of 8 -> valid
    assert (at9["capture_pct"], at9["valid"]) == (75.0, True)
    assert at9["mean"] == (5 * 100 + 130) / 6 and at9["daqi"] == 4


def test_pm10_24h_mean_of_50_5_is_index_4() -> None:
    recs = run(frames("S", range(24 * 60), pm10_ugm3=50.5))
    last = pick(recs, "pm10", "24h", ts=T0 + 24 * H)[0]
    assert (last["mean"], last["valid"], last["daqi"]) == (50.5, True, 4)
    assert pick(recs, "pm10", "24h", ts=T0 + 17 * H)[0]["valid"] is False
    assert pick(recs, "pm10", "24h", ts=T0 + 18 * H)[0]["daqi"] == 4
    assert pick(recs, measurement="daqi")[-1]["index"] == 4


def test_outage_windows_are_written_empty_and_nothing_after_the_last_sample() -> None:
    # NO2 for 3 h, an outage in hour 3, NO2 again in hour 4; PM2.5 stops after hour 1.
    minutes = [*range(180), *range(240, 300)]
    recs = run(merged("S", {"no2_ugm3": dict.fromkeys(minutes, 30.0),
                            "pm25_ugm3": dict.fromkeys(range(60), 10.0)}))
    no2 = [(r["ts"], r["valid"], "mean" in r) for r in pick(recs, "no2", "1h")]
    assert no2 == [(T0 + H, True, True), (T0 + 2 * H, True, True), (T0 + 3 * H, True, True),
                   (T0 + 4 * H, False, False), (T0 + 5 * H, True, True)]
    assert [r["ts"] for r in pick(recs, "pm25", "1h")] == [T0 + H]
    assert max(r["ts"] for r in pick(recs, "pm25", "24h")) == T0 + H
    assert pick(recs, "so2") == [] and pick(recs, "co") == []


def test_so2_index_of_an_hour_is_the_highest_of_its_four_quarters() -> None:
    # quarter means 100, 300 (index 4), 50, 50 -> the hour's SO2 index is 4
    vals = [100.0] * 15 + [300.0] * 15 + [50.0] * 30
    recs = run(frames("S", range(60), so2_ugm3=vals, no2_ugm3=10.0))
    quarters = [r.get("daqi") for r in pick(recs, "so2", "15m")]
    assert quarters == [2, 4, 1, 1]
    (d,) = pick(recs, measurement="daqi")
    assert (d["ts"], d["index"], d["pollutant"], d["band"]) == (T0 + H, 4, "so2", "Moderate")


def test_every_record_has_contract_fields_and_types() -> None:
    recs = run(frames("S", range(130), no2_ugm3=list(np.linspace(10, 90, 130)), co_mgm3=0.4))
    for r in pick(recs):
        assert set(r) <= {"measurement", "site_id", "pollutant", "period", "start", "ts",
                          "mean", "capture_pct", "valid", "daqi"}
        assert isinstance(r["valid"], bool) and isinstance(r["capture_pct"], float)
        assert r["pollutant"] != "co" or "daqi" not in r
