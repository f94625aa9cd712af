"""The alert engine against hand-worked sequences (CONTRACT.md §6, issue #6 rules)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

from thurrock_streams.alerts.engine import AlertEngine, SiteAlerts
from thurrock_streams.alerts.rules import RulesError, load_rules, parse_rules
from thurrock_streams.qc import window_runs

T0 = 1_699_995_600  # 2023-11-14T21:00:00Z, an hour end
SITE = 'purfleet "London Rd", =1'


@pytest.fixture
def engine() -> AlertEngine:
    return AlertEngine(load_rules())


def run(engine: AlertEngine, kind: str, recs: list[dict[str, Any]],
        state: SiteAlerts | None = None) -> list[tuple[str, str, Any, float]]:
    st = state if state is not None else SiteAlerts()
    out = []
    for r in recs:
        for ev in engine.evaluate(SITE, st, kind, {"site_id": SITE, **r}):
            assert set(ev) == {"site_id", "rule", "severity", "state", "value", "threshold",
                               "ts", "message"}
            assert ev["site_id"] == SITE and ev["message"]
            out.append((ev["rule"], ev["state"], ev["severity"], ev["value"], ev["threshold"],
                        ev["ts"]))
    return out  # type: ignore[return-value]


def no2(i: int, index: int | None, valid: bool = True) -> dict[str, Any]:
    rec: dict[str, Any] = {"measurement": "air_quality", "pollutant": "no2", "period": "1h",
                           "ts": T0 + 3600 * i, "valid": valid, "capture_pct": 100.0,
                           "mean": 100.0}
    if index is not None and valid:
        rec["daqi"] = index
    return rec


def test_daqi_raise_escalate_clear_sequence(engine: AlertEngine) -> None:
    indices = [3, 4, 5, 7, 6, 10, 3, 5, 2, 3, 4]
    got = run(engine, "air", [no2(i, x) for i, x in enumerate(indices)])
    h = [T0 + 3600 * i for i in range(len(indices))]
    assert got == [
        ("daqi:no2", "raised", "moderate", 4, 4, h[1]),
        ("daqi:no2", "escalated", "high", 7, 7, h[3]),
        ("daqi:no2", "escalated", "very high", 10, 10, h[5]),
        # 3, then 5 breaks the run; 2, 3 are two consecutive low means
        ("daqi:no2", "cleared", "low", 3, 4, h[9]),
        ("daqi:no2", "raised", "moderate", 4, 4, h[10]),
    ]


def test_daqi_jump_raises_once_at_the_band_reached(engine: AlertEngine) -> None:
    got = run(engine, "air", [no2(0, 2), no2(1, 8), no2(2, 9), no2(3, 7)])
    assert got == [("daqi:no2", "raised", "high", 8, 7, T0 + 3600)]


def test_daqi_invalid_means_neither_raise_nor_clear(engine: AlertEngine) -> None:
    recs = [no2(0, 5), no2(1, 3), no2(2, None, valid=False), no2(3, 2), no2(4, 9, False)]
    got = run(engine, "air", recs)
    assert got == [("daqi:no2", "raised", "moderate", 5, 4, T0),
                   ("daqi:no2", "cleared", "low", 2, 4, T0 + 3 * 3600)]


def test_daqi_only_from_the_defining_period_and_no_repeat_on_replay(engine: AlertEngine) -> None:
    st = SiteAlerts()
    rec15 = {**no2(0, 6), "period": "15m"}  # NO2's index comes from the 1-hour mean only
    assert run(engine, "air", [rec15], st) == []
    assert len(run(engine, "air", [no2(1, 6)], st)) == 1
    # the same window again (a rewrite, a replay) and an older one change nothing
    assert run(engine, "air", [no2(1, 6), no2(0, 9), no2(1, 1)], st) == []
    assert run(engine, "air", [no2(2, 6)], st) == []
    # the state survives its JSON form: still open, so no second raise
    st2 = SiteAlerts.from_json(st.to_json())
    assert run(engine, "air", [no2(3, 6)], st2) == []
    assert run(engine, "air", [no2(4, 1), no2(5, 1)], st2)[0][1] == "cleared"


def test_daqi_o3_from_8h_and_so2_from_15m(engine: AlertEngine) -> None:
    o3 = {"measurement": "air_quality", "pollutant": "o3", "period": "8h", "ts": T0,
          "valid": True, "mean": 110.0, "daqi": 4}
    so2 = {"measurement": "air_quality", "pollutant": "so2", "period": "15m", "ts": T0 + 900,
           "valid": True, "mean": 540.0, "daqi": 7}
    got = run(engine, "air", [o3, {**o3, "period": "1h", "ts": T0 + 60}, so2])
    assert [(g[0], g[1], g[3]) for g in got] == [("daqi:o3", "raised", 4),
                                                  ("daqi:so2", "raised", 7)]


def limit_rec(ts: float, mean: float, pollutant: str = "no2", period: str = "1h",
              valid: bool = True) -> dict[str, Any]:
    return {"measurement": "air_quality", "pollutant": pollutant, "period": period, "ts": ts,
            "valid": valid, "mean": mean, "capture_pct": 100.0}


def limit_events(got: list[Any]) -> list[Any]:
    return [g for g in got if g[0].startswith("limit:")]


def test_no2_hourly_limit_counts_per_year(engine: AlertEngine) -> None:
    y2024 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    # 200 and 200.49 round to 200 (not above 200); 200.5 rounds to 201 (an exceedance)
    recs = [limit_rec(y2024 + 3600 * 1, 200.0), limit_rec(y2024 + 3600 * 2, 200.49),
            limit_rec(y2024 + 3600 * 3, 250.0, valid=False)]
    recs += [limit_rec(y2024 + 3600 * (10 + i), 200.5 + i) for i in range(20)]
    got = limit_events(run(engine, "air", recs))
    warn_ts = y2024 + 3600 * (10 + 13)  # the 14th exceedance: ceil(0.75 × 18)
    over_ts = y2024 + 3600 * (10 + 18)  # the 19th: one more than the 18 allowed
    assert got == [("limit:no2_1h", "raised", "moderate", 14, 18, warn_ts),
                   ("limit:no2_1h", "escalated", "high", 19, 18, over_ts)]


def test_limit_year_boundary_clears_and_restarts(engine: AlertEngine) -> None:
    st = SiteAlerts()
    y2024 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    y2025 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
    # 14 exceedances late in 2024; the hour ending at midnight belongs to 2024
    recs = [limit_rec(y2025 - 3600 * (13 - i), 300.0) for i in range(14)]
    got = limit_events(run(engine, "air", recs, st))
    assert got == [("limit:no2_1h", "raised", "moderate", 14, 18, y2025)]
    got = limit_events(run(engine, "air", [limit_rec(y2025 + 3600, 10.0)], st))
    assert got == [("limit:no2_1h", "cleared", "low", 0, 18, y2025 + 3600)]
    assert st.rules["limit:no2_1h"]["count"] == 0 and st.rules["limit:no2_1h"]["year"] == 2025
    del y2024


def test_pm10_daily_limit_only_at_midnight(engine: AlertEngine) -> None:
    day = dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()
    recs = [limit_rec(day + 86400 * i + h * 3600, 60.0, "pm10", "24h")
            for i in range(40) for h in (6, 24)]
    got = limit_events(run(engine, "air", recs))
    # 35 allowed: warning at ceil(26.25) = 27 days, exceeded on the 36th
    assert got == [("limit:pm10_24h", "raised", "moderate", 27, 35, day + 86400 * 27),
                   ("limit:pm10_24h", "escalated", "high", 36, 35, day + 86400 * 36)]


def minute(i: int, ci: float | None, count: int = 10) -> dict[str, Any]:
    rec: dict[str, Any] = {"window": "1m", "ts": T0 + 60 * i, "count": count,
                           "flow_vph": count * 60.0}
    if ci is not None:
        rec["congestion_index"] = ci
    return rec


def test_congestion_sequence(engine: AlertEngine) -> None:
    cis = ([0.1] * 3 + [0.6] * 4 + [0.2] + [0.55] * 5 + [0.8] * 5 + [0.6] * 2 + [0.29] * 4
           + [0.31] + [0.0] * 5)
    got = run(engine, "traffic", [minute(i, c) for i, c in enumerate(cis)])
    m = [T0 + 60 * i for i in range(len(cis))]
    assert got == [
        ("congestion", "raised", "moderate", 0.55, 0.5, m[12]),
        ("congestion", "escalated", "high", 0.8, 0.75, m[17]),
        ("congestion", "cleared", "low", 0.0, 0.3, m[29]),
    ]


def test_congestion_empty_and_standing_minutes(engine: AlertEngine) -> None:
    # no vehicles: free-flowing; vehicles that all stood still: fully congested
    standing = [minute(i, None, count=4) for i in range(5)]
    got = run(engine, "traffic", standing + [minute(5 + i, None, count=0) for i in range(5)])
    assert [(g[1], g[2], g[3]) for g in got] == [("raised", "high", 1.0),
                                                  ("cleared", "low", 0.0)]


def test_congestion_15m_windows_and_gaps_do_not_count(engine: AlertEngine) -> None:
    recs = [minute(i, 0.9) for i in range(4)] + [minute(10, 0.9)]
    recs += [{**minute(20, 0.9), "window": "15m"}]
    assert run(engine, "traffic", recs) == []


def test_sensor_silent(engine: AlertEngine) -> None:
    st = SiteAlerts()
    run(engine, "traffic", [minute(0, 0.1)], st)
    assert engine.silent(SITE, st, "traffic", T0 + 900) == []  # strictly more than 900 s
    ev = engine.silent(SITE, st, "traffic", T0 + 960)
    assert [(e["rule"], e["state"], e["value"], e["threshold"], e["ts"]) for e in ev] == [
        ("sensor_silent", "raised", 960, 900, T0 + 960)]
    assert engine.silent(SITE, st, "traffic", T0 + 5000) == []  # open: no repeat
    # its last minutes, closed late by the idle flush, are no sign of life
    assert run(engine, "traffic", [minute(1, 0.1), minute(14, 0.1)], st) == []
    assert run(engine, "traffic", [minute(15, 0.1)], st) == []  # before it was found silent
    got = run(engine, "traffic", [minute(30, 0.1)], st)
    assert got == [("sensor_silent", "cleared", "low", 1800, 900, T0 + 1800)]


def test_sensor_stuck_from_qc_marks(engine: AlertEngine) -> None:
    stuck = {"qc": {"stuck": {"speed_kph": 31}}}
    recs = [minute(0, 0.1), {**minute(1, 0.1), **stuck}, {**minute(2, 0.1), **stuck},
            minute(3, 0.1)]
    got = run(engine, "traffic", recs)
    assert got == [("sensor_stuck:speed_kph", "raised", "moderate", 31, 30, T0 + 60),
                   ("sensor_stuck:speed_kph", "cleared", "low", 0, 30, T0 + 180)]


def test_window_runs_follow_runs_across_windows_and_ignore_zeros() -> None:
    carry: dict[str, Any] = {}
    starts = np.array([0.0, 60.0, 120.0])
    # out of order inside the windows: runs follow event time, not arrival
    ts = np.array([5.0, 1.0, 2.0, 70.0, 80.0, 61.0, 130.0])
    v = np.array([2.0, 1.0, 2.0, 2.0, np.nan, 2.0, 3.0])
    assert window_runs(carry, "f", ts, v, starts, 60).tolist() == [2, 4, 1]
    assert carry["runs"]["f"] == [3.0, 1]
    # the next windows carry the run on; a window without readings keeps it
    more = window_runs(carry, "f", np.array([185.0, 300.0]), np.array([3.0, 3.0]),
                       np.array([180.0, 240.0, 300.0]), 60)
    assert more.tolist() == [2, 0, 3]
    zeros = window_runs(carry, "f", np.arange(360.0, 420.0), np.zeros(60),
                        np.array([360.0]), 60)
    assert zeros.tolist() == [0]
    # batching does not matter: one call over all windows gives the same peaks
    whole: dict[str, Any] = {}
    t2 = np.concatenate((ts, [185.0, 300.0]))
    v2 = np.concatenate((v, [3.0, 3.0]))
    got = window_runs(whole, "f", t2, v2, np.arange(0.0, 360.0, 60.0), 60)
    assert got.tolist() == [2, 4, 1, 2, 0, 3]


def test_rules_file_errors_name_the_entry(tmp_path: Any) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[limit]]\nname = "x"\npollutant = "no2"\nperiod = "2h"\n'
                   'threshold = 1.0\nallowed = 3\n')
    with pytest.raises(RulesError, match=r"\[\[limit\]\] #1 \(x\).*period '2h'"):
        load_rules(bad)
    with pytest.raises(RulesError, match=r"\[congestion\]: 'minutes' is missing"):
        parse_rules({"congestion": {"raise_at": 0.5, "escalate_at": 0.7, "clear_below": 0.2,
                                    "clear_minutes": 3}})
    with pytest.raises(RulesError, match=r"\[daqi\]: 'raise_at' = '4' has the wrong type"):
        parse_rules({"daqi": {"pollutants": ["no2"], "raise_at": "4", "escalate_at": [7],
                              "clear_at_or_below": 3, "clear_after": 2}})
    with pytest.raises(RulesError, match="unknown sections"):
        parse_rules({"dakqi": {}})
    bad.write_text("[daqi\n")
    with pytest.raises(RulesError, match=r"rules\.toml"):
        load_rules(bad)


def test_default_rules() -> None:
    r = load_rules()
    assert r.daqi is not None and r.daqi.escalate_at == (7, 10)
    assert {x.name: (x.threshold, x.allowed, x.warn_at) for x in r.limits} == {
        "no2_1h": (200.0, 18, 14), "pm10_24h": (50.0, 35, 27), "so2_15m": (266.0, 35, 27)}
    assert r.congestion is not None and r.congestion.minutes == 5
    assert r.silent_after_s == 900 and r.stuck_samples == 30


def _step(pipeline: Any, frame: dict[str, Any], batches: int) -> list[dict[str, Any]]:
    """Run a frame through a processor in ``batches`` pieces; return the records."""
    import json

    from thurrock_streams.engine.processor import Processor
    from thurrock_streams.readings import RawMessage

    proc = Processor(pipeline)
    n = len(frame["columns"]["ts"])
    cuts = np.linspace(0, n, batches + 1).astype(int)
    states: dict[str, Any] = {}
    recs: list[dict[str, Any]] = []
    for b in range(batches):
        part = {"site_id": frame["site_id"],
                "columns": {k: v[cuts[b]:cuts[b + 1]] for k, v in frame["columns"].items()}}
        raw = RawMessage("r", 0, b, b"k", json.dumps(part).encode())
        out = proc.step([raw], states, now=T0 + 10**7)
        states.update(out.changed)
        recs += [r for _, r in out.aggregates]
    site = frame["site_id"]
    recs += [r for _, r in proc.run_on(site, states[site], math.inf).aggregates]
    return recs


def test_pipelines_mark_flat_lining_windows_the_same_whatever_the_batching() -> None:
    from thurrock_streams.air import AirPipeline
    from thurrock_streams.traffic import TrafficPipeline

    # 40 vehicles at exactly 64.0 km/h from minute 2, one a minute... then varying speeds
    speeds = [50.0 + i for i in range(10)] + [64.0] * 40 + [70.0 + i for i in range(10)]
    ts = [T0 + 20.0 + 60 * i for i in range(len(speeds))]
    frame = {"site_id": "M25 J30", "columns": {"ts": ts, "lane": [1] * len(ts),
                                               "speed_kph": speeds}}
    marks = []
    for batches in (1, 7):
        recs = _step(TrafficPipeline.create(30.0, 300.0, 30, ("speed_kph",)), frame, batches)
        marks.append([(r["ts"], r["qc"]) for r in recs if "qc" in r])
    # the 30th identical speed is at minute 10 + 29 = 39: windows ending 40 .. 50 minutes
    assert marks[0] == marks[1] == [
        (T0 + 60 * (m + 1), {"stuck": {"speed_kph": m - 9}}) for m in range(39, 50)]
    no2 = [40.0 + (i % 3) for i in range(20)] + [33.0] * 35 + [0.0] * 40
    ts = [T0 + 30.0 + 60 * i for i in range(len(no2))]
    frame = {"site_id": "Grays", "columns": {"ts": ts, "no2_ugm3": no2}}
    recs = _step(AirPipeline.create(30.0, 300.0, 30, ("no2_ugm3",)), frame, 3)
    marked = [(r["ts"], r["period"], r["qc"]) for r in recs if "qc" in r]
    # the 30th sample at 33.0 is minute 49: the 15-minute window ending at minute 60
    assert marked == [(T0 + 3600, "15m", {"stuck": {"no2_ugm3": 35}})]


def test_silent_needs_event_time_lag_and_a_quiet_site() -> None:
    from thurrock_streams.agents.alerts import AlertAgent, quiet_s

    agent = object.__new__(AlertAgent)  # the Faust-free part of the agent
    agent.engine = AlertEngine(load_rules())
    states: dict[str, SiteAlerts] = {}
    agent._load = lambda site: states.setdefault(site, SiteAlerts())  # type: ignore[method-assign]
    agent._assigned_at = 0.0
    agent.quiet_s = quiet_s(60.0)
    assert agent.quiet_s == 65.0 and quiet_s(4.0) == 30.0
    for site, ts in (("a", T0), ("b", T0 + 900), ("c", T0 + 5000)):
        states[site] = SiteAlerts(seen={"traffic": ts})
    agent.newest = {"traffic": {"a": T0, "b": T0 + 900, "c": T0 + 5000}, "air": {"q": T0}}
    # b got a new window just now, a 60 s ago: both far behind c in event time
    agent.last_rx = {"a": 40.0, "b": 100.0, "c": 100.0}
    changed: dict[str, SiteAlerts] = {}
    assert agent._silent(changed, now=100.0) == []  # nobody quiet for 65 s yet
    evs = agent._silent(changed, now=105.0)
    assert [(e["site_id"], e["value"], e["ts"]) for e in evs] == [("a", 5000, T0 + 5000)]
    evs = agent._silent(changed, now=165.0)
    assert [(e["site_id"], e["value"], e["ts"]) for e in evs] == [("b", 4100, T0 + 5000)]
    assert agent._silent(changed, now=1000.0) == []  # open alerts do not repeat
    assert set(changed) == {"a", "b"}  # c is the newest; q is alone of its kind


def test_a_heartbeating_sensor_without_vehicles_is_not_silent_one_sending_nothing_is() -> None:
    """Three detectors: ``busy`` has vehicles throughout; ``hb`` has vehicles for 3
    minutes, then only heartbeats (a quiet road at night: its windows are written with
    count 0); ``gone`` has vehicles for 3 minutes, then nothing (its running watermark
    closes windows but writes none). Only ``gone`` is found silent."""
    import json

    from thurrock_streams.agents.alerts import AlertAgent, AlertCounters, quiet_s
    from thurrock_streams.engine.processor import Processor
    from thurrock_streams.readings import RawMessage
    from thurrock_streams.traffic import TrafficPipeline

    proc = Processor(TrafficPipeline.create(30.0, 300.0))
    msgs = []
    for i in range(40):  # minutes
        for site in ("busy", "hb", "gone"):
            if i < 3 or site == "busy":
                v = {"site_id": site, "ts": T0 + 60 * i + 10, "lane": 1, "speed_kph": 80.0}
            elif site == "hb":
                v = {"site_id": site, "ts": T0 + 60 * i + 30, "heartbeat": True}
            else:
                continue
            msgs.append(RawMessage("traffic.readings", 0, len(msgs), site.encode(),
                                   json.dumps(v).encode()))
    out = proc.step(msgs, {}, now=T0 + 3000)
    # "gone" went quiet: its running watermark reaches the others' event time
    recs = [r for _, r in out.aggregates]
    recs += [r for _, r in proc.run_on("gone", out.changed["gone"], T0 + 2400).aggregates]

    agent = object.__new__(AlertAgent)  # the Faust-free part of the agent
    agent.engine = AlertEngine(load_rules())
    agent.counters = AlertCounters()
    agent.kind_of = {"traffic.aggregates": "traffic"}
    states: dict[str, SiteAlerts] = {}
    agent._load = lambda site: states.setdefault(site, SiteAlerts())  # type: ignore[method-assign]
    agent.newest, agent.last_rx, agent._index_stale = {}, {}, False
    agent._assigned_at, agent.quiet_s = 0.0, quiet_s(60.0)
    events, changed = agent.process([("traffic.aggregates", 0, i, json.dumps(r).encode())
                                     for i, r in enumerate(recs)])
    assert {e["rule"] for e in events} <= {"congestion"}
    assert max(r["ts"] for r in recs if r["site_id"] == "hb") > T0 + 2000
    agent.last_rx = {s: 0.0 for s in agent.last_rx}  # no new window of anyone for long
    evs = agent._silent(changed, now=1000.0)
    assert [(e["site_id"], e["rule"], e["state"]) for e in evs] == [
        ("gone", "sensor_silent", "raised")]
