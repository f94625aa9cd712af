"""DAQI corrections from held-back windows: within the kept hours, and beyond them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from thurrock_streams.air import AirPipeline
from thurrock_streams.engine.processor import Processor, SiteState
from thurrock_streams.readings import RawMessage

H = 3600
T0 = 1_699_995_600  # an hour boundary (2023-11-14 21:00 UTC)


def hour_by_hour(hours: int, **values: Callable[[int], float | None]) -> list[dict[str, Any]]:
    """One sample a minute, sent as one frame per hour (so held-back windows happen)."""
    out = []
    for h in range(hours):
        minutes = range(60 * h, 60 * h + 60)
        cols: dict[str, Any] = {"ts": [T0 + 60 * m + 30 for m in minutes]}
        cols.update({k: [f(m) for m in minutes] for k, f in values.items()})
        out.append({"site_id": "S", "columns": cols})
    return out


def run(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    proc = Processor(AirPipeline.create(30.0, 300.0))
    states: dict[str, SiteState] = {}
    recs = []
    for i, m in enumerate(messages):
        out = proc.step([RawMessage("air.readings", 0, i, b"S", json.dumps(m).encode())],
                        states, now=T0 + 10**7)
        states.update(out.changed)
        recs += [a for _, a in out.aggregates]
    return recs


def daqi_writes(recs: list[dict[str, Any]], hour: int) -> list[tuple[int, str]]:
    return [(r["index"], r["pollutant"]) for r in recs
            if r["measurement"] == "daqi" and r["ts"] == T0 + hour * H]


def test_o3_back_after_a_short_outage_rewrites_the_hours_it_raises() -> None:
    # NO2 index 1 throughout; O3 (8h index 4) off in hours 10-12: the 8h means ending at
    # 11:00 and 12:00 (7 and 6 valid hours) are only known once O3 is back.
    recs = run(hour_by_hour(20, no2_ugm3=lambda m: 30.0,
                            o3_ugm3=lambda m: None if 600 <= m < 780 else 110.0))
    assert daqi_writes(recs, 11) == [(1, "no2"), (4, "o3")]
    assert daqi_writes(recs, 12) == [(1, "no2"), (4, "o3")]


def test_o3_back_after_more_than_26_hours_does_not_rewrite_old_hours_from_o3_alone() -> None:
    # NO2 index 4 throughout; O3 (8h index 1) off from hour 10 to hour 40. Once O3 is back
    # the 8h means ending at 11:00 and 12:00 get index 1, but those hours' NO2 parts were
    # dropped long ago: their records must stay (4, no2), not be rewritten as (1, o3).
    recs = run(hour_by_hour(46, no2_ugm3=lambda m: 210.0,
                            o3_ugm3=lambda m: None if 600 <= m < 2400 else 20.0))
    assert daqi_writes(recs, 11) == [(4, "no2")]
    assert daqi_writes(recs, 12) == [(4, "no2")]
    o3_8h = [r for r in recs if r.get("pollutant") == "o3" and r.get("period") == "8h"
             and r["ts"] == T0 + 11 * H]
    assert o3_8h and o3_8h[0]["daqi"] == 1  # the running mean itself is still written
