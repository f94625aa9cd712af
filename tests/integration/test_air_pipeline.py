"""The air pipeline end to end on the real broker and store (CONTRACT.md §1–§3, §5).

The feed (tests/integration/air_feeds.py) covers 26 hours at three monitors: single
readings and frames, explicit nulls and missing pollutants, DAQI boundary values, an O3
analyser outage of three hours, hours and quarters below and exactly at 75% capture,
samples out of order within the allowed lateness and late ones. The expected points are
computed there independently of the project's code; the store must hold exactly them.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

import pytest

from thurrock_streams.stack import StackConfig

from .air_feeds import T0, Expected, H, Key, air_feed, band, consume_settled
from .harness import consume_all, poll, send, series, wait_for

pytestmark = pytest.mark.integration

Stored = tuple[dict[Key, dict[str, list[float]]], dict[tuple[str, float], list[float]]]


def stored(stack: StackConfig, prefix: str) -> Stored:
    """({(site, pollutant, period, ts): {field: [every value written]}},
    {(site, hour end): [every daqi index written]}) for this test's sites."""
    air: dict[Key, dict[str, list[float]]] = {}
    for key, fields in series(stack, "air_quality", prefix).items():
        tags = dict(key)
        for name, pts in fields.items():
            for ts, v in pts:
                k = (tags["site_id"], tags["pollutant"], tags["period"], ts)
                air.setdefault(k, {}).setdefault(name, []).append(v)
    daqi: dict[tuple[str, float], list[float]] = {}
    for key, fields in series(stack, "daqi", prefix).items():
        # band and pollutant are strings: VictoriaMetrics keeps no string values
        for ts, v in fields.get("index", []):
            daqi.setdefault((dict(key)["site_id"], ts), []).append(v)
    return air, daqi


def complete(got: Stored, want: Expected, first_writes: bool = True) -> bool:
    """Every expected point is there, each daqi hour has its final value, and (with
    ``first_writes``) each re-written daqi hour has both of its writes."""
    air, daqi = got
    if any(key not in air or set(air[key]) != set(rec) for key, rec in want.air.items()):
        return False
    return all(hour in daqi and float(idx) in daqi[hour]
               and (not first_writes or hour not in want.daqi_first or len(daqi[hour]) >= 2)
               for hour, (idx, _) in want.daqi.items())


def assert_air(got: dict[Key, dict[str, list[float]]], want: Expected, once: bool) -> None:
    """Same points, same fields, every write of a field the expected value.

    ``once``: each point written exactly once (an uninterrupted run); otherwise identical
    rewrites are allowed (CONTRACT.md §3, after a crash), different values are not. The
    store keeps about 12 significant digits, the processor means to 9 decimals.
    """
    assert set(got) == set(want.air)
    for key, rec in want.air.items():
        assert set(got[key]) == set(rec), key
        for name, values in got[key].items():
            if once:
                assert len(values) == 1, (key, name, values)
            assert values == [pytest.approx(rec[name], rel=1e-10, abs=1e-9)] * len(values), \
                (key, name)


def test_air_feed_gives_exact_means_capture_running_means_and_daqi(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    feed = air_feed(prefix)
    want = feed.expected()
    port, roadside, grays = (s.site_id for s in feed.sites)
    # No idle flush during the test: the closing sample of each site closes its windows.
    worker = make_worker(IDLE_FLUSH_S="600")
    topic = f"{prefix}air.readings"
    send(stack, topic, feed.phase1)
    # Phase 1 stops inside the O3 outage: the port site's hours 10 and 11 close with no O3
    # after them, so their O3 windows are held back and the daqi of their ends is written
    # without O3. Waiting for that makes the later re-write (once O3 is back) certain.
    wait_for(lambda: (port, T0 + 12.0 * H) in stored(stack, prefix)[1], 60,
             "the daqi of 12:00 before O3 comes back")
    send(stack, topic, feed.phase2)
    air, daqi = poll(lambda: stored(stack, prefix), lambda g: complete(g, want), 90,
                     "every air point in the store")

    assert_air(air, want, once=True)
    # a site measuring only NO2 and PM10 has records of those alone
    assert {k[1] for k in air if k[0] == roadside} == {"no2", "pm10"}
    assert {k[1] for k in air if k[0] == grays} == {"no2", "o3", "pm10"}

    # Spot checks of the rules, against values worked out by hand.
    def rec(site: str, p: str, period: str, end_h: float) -> dict[str, list[float]]:
        return air[(site, p, period, T0 + end_h * H)]

    assert rec(port, "no2", "1h", 3)["mean"] == [pytest.approx(200.49)]
    assert rec(port, "no2", "1h", 3)["daqi"] == [3]           # 200.49 rounds to 200: Low 3
    assert rec(port, "no2", "1h", 4)["daqi"] == [4]           # 200.5 rounds up to 201
    assert "daqi" not in rec(port, "no2", "15m", 4)           # NO2's index is from 1h only
    assert rec(port, "so2", "15m", 8.25)["daqi"] == [3]       # 266.49 -> 266
    assert rec(port, "so2", "15m", 8.5)["daqi"] == [4]        # 266.5 -> 267
    assert rec(port, "no2", "1h", 6)["capture_pct"] == [pytest.approx(100 * 44 / 60)]
    assert rec(port, "no2", "1h", 6)["valid"] == [0.0]         # 44 of 60 minutes ...
    assert "daqi" not in rec(port, "no2", "1h", 6)             # ... so no index
    assert rec(port, "no2", "1h", 7)["capture_pct"] == [75.0]  # 45 of 60: valid
    assert rec(port, "no2", "1h", 7)["valid"] == [1.0]
    assert rec(port, "no2", "15m", 6) == {"capture_pct": [0.0], "valid": [0.0]}  # empty
    assert rec(port, "o3", "1h", 11) == {"capture_pct": [0.0], "valid": [0.0]}  # outage
    assert rec(port, "o3", "8h", 11)["capture_pct"] == [87.5]  # 7 of 8 hours
    assert rec(port, "o3", "8h", 13)["valid"] == [0.0]         # 5 of 8 hours
    assert rec(port, "o3", "8h", 5)["capture_pct"] == [62.5]   # hours before the first sample
    assert rec(port, "o3", "8h", 6)["valid"] == [1.0]          # ... count as missing
    assert rec(roadside, "pm10", "24h", 17)["valid"] == [0.0]  # 17 of 24 hours
    assert rec(roadside, "pm10", "24h", 18)["capture_pct"] == [75.0]
    assert rec(roadside, "pm10", "24h", 18)["daqi"] == [4]     # 50.5 -> 51: Moderate 4
    assert rec(roadside, "pm10", "1h", 21)["mean"] == [80.0]   # half an hour: invalid ...
    assert rec(roadside, "pm10", "24h", 26)["mean"] == [50.5]  # ... so left out of the mean
    assert rec(roadside, "pm10", "24h", 26)["capture_pct"] == [pytest.approx(2300 / 24)]
    assert rec(grays, "pm10", "24h", 26)["daqi"] == [3]        # 50.49 -> 50: Low 3
    # every timestamp is a window end; the last windows end at the last sample's
    assert max(k[3] for k in air if k[0] == port) == T0 + 26.0 * H

    # daqi: each hour end written once, except the two hours re-written when O3 came back
    assert set(daqi) == set(want.daqi)
    for hour, (idx, _) in want.daqi.items():
        first = want.daqi_first.get(hour)
        assert sorted(daqi[hour]) == sorted([idx] + ([first[0]] if first else [])), hour
    assert {h for _, h in want.daqi_first} == {T0 + 11.0 * H, T0 + 12.0 * H}
    assert want.daqi[(port, T0 + 4.0 * H)] == (4, "no2")
    assert want.daqi[(port, T0 + 9.0 * H)] == (4, "so2")  # tie with O3: DAQI order

    # The aggregates topic: band and pollutant (strings, which the store drops), and for a
    # re-written hour the newer record after the older one.
    n = len(want.air) + len(want.daqi) + len(want.daqi_first)
    records = [json.loads(r.value)
               for r in consume_settled(stack.bootstrap, f"{prefix}air.aggregates", n)]
    assert len(records) == n
    written: dict[tuple[str, float], list[tuple[int, str, str]]] = defaultdict(list)
    for r in records:
        if r["measurement"] == "daqi":
            written[(r["site_id"], r["ts"])].append((r["index"], r["band"], r["pollutant"]))
    for hour, (idx, pollutant) in want.daqi.items():
        history = [(i, p) for i, _, p in written[hour]]
        first = want.daqi_first.get(hour)
        assert history == ([first] if first else []) + [(idx, pollutant)], hour
        assert all(b == band(i) for i, b, _ in written[hour])
    assert {b for w in written.values() for _, b, _ in w} == {"Low", "Moderate"}
    assert all(isinstance(r["valid"], bool) for r in records if r["measurement"] != "daqi")

    # Late samples: dead-lettered, with the frame row where they were in a frame.
    dead = [json.loads(r.value) for r in consume_all(
        stack, f"{prefix}readings.deadletter", len(want.late))]
    assert sorted((d["reason"], json_ts(d), d["row"] is None) for d in dead) == sorted(
        ("late", ts, row is None) for _, ts, row in want.late)
    assert {d["row"] for d in dead} == {row for _, _, row in want.late}
    assert all(d["topic"] == f"{prefix}air.readings" for d in dead)

    c = poll(lambda: worker.counters()["pipelines"]["air"],
             lambda x: x["readings_in"] >= want.readings, 30, "the air counters")
    assert c["readings_in"] == want.readings
    assert c["deadlettered"] == {"late": len(want.late)}
    assert c["accepted"] == want.readings - len(want.late)


def json_ts(dead: dict[str, Any]) -> float:
    """The ts of a dead-lettered reading (the named row of a frame)."""
    value = json.loads(base64.b64decode(dead["value_b64"]))
    if dead["row"] is None:
        return float(value["ts"])
    return float(value["columns"]["ts"][dead["row"]])


def test_kill_9_mid_feed_then_restart_writes_the_same_air_points(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    feed = air_feed(prefix)
    want = feed.expected()
    env = {"IDLE_FLUSH_S": "600"}
    first = make_worker(**env)
    send(stack, f"{prefix}air.readings", feed.phase1)
    # kill while the worker is busy with the feed: as soon as the first points are stored
    wait_for(lambda: series(stack, "air_quality", prefix), 60, "the first air points",
             every=0.05)
    first.kill9()
    send(stack, f"{prefix}air.readings", feed.phase2)
    make_worker(**env)
    # a crash can leave the end of phase 1 to be stepped together with phase 2: then an
    # hour re-written in an uninterrupted run is written once, with its final value
    air, daqi = poll(lambda: stored(stack, prefix),
                     lambda g: complete(g, want, first_writes=False), 120,
                     "every air point after the restart")
    # Identical rewrites of replayed windows are allowed; a different value is not (the
    # store has no deduplication: a second value at one timestamp would be kept).
    assert_air(air, want, once=False)
    assert set(daqi) == set(want.daqi)
    for hour, (idx, _) in want.daqi.items():
        allowed = {float(idx)}
        if hour in want.daqi_first:
            # This hour is first written without O3 if the worker closed it before it saw
            # O3 come back, which depends on where the crash cut the batches.
            allowed.add(float(want.daqi_first[hour][0]))
        assert float(idx) in daqi[hour] and set(daqi[hour]) <= allowed, (hour, daqi[hour])
    # the newest daqi record of every hour is the right one
    records = [json.loads(r.value) for r in consume_settled(
        stack.bootstrap, f"{prefix}air.aggregates", len(want.air) + len(want.daqi))]
    newest = {(r["site_id"], r["ts"]): (r["index"], r["pollutant"]) for r in records
              if r["measurement"] == "daqi"}
    assert newest == want.daqi


def test_a_monitor_that_stops_has_its_windows_written_by_the_running_watermark(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    # NO2 for the hour's last 50 minutes, O3 for 10 of them, then silence: the monitor's
    # watermark runs on with the clock (CONTRACT.md §3) and closes every window about 15 s
    # after the last sample (T0 + 3590 + 15 = the hour's end + 5 s lateness), writing
    # every window of each pollutant's span and none after it.
    make_worker(IDLE_FLUSH_S="2", ALLOWED_LATENESS_S="5")
    site = f"{prefix}AQ-QUIET"
    no2 = [150.0 + (m % 2) for m in range(10, 60)]
    frame = {"site_id": site, "columns": {
        "ts": [T0 + 60.0 * m + 50 for m in range(10, 60)], "no2_ugm3": no2,
        "o3_ugm3": [40.0] * 10 + [None] * 40}}
    send(stack, f"{prefix}air.readings", [(site.encode(), frame)])
    quarters = [(0, 5), (5, 20), (20, 35), (35, 50)]  # sample indices per 15 minutes
    want: dict[Key, dict[str, float]] = {
        **{(site, "no2", "15m", T0 + 900.0 * (q + 1)): {
            "mean": sum(no2[a:b]) / (b - a), "capture_pct": 100 * (b - a) / 15,
            "valid": float(b - a >= 12)} for q, (a, b) in enumerate(quarters)},
        (site, "no2", "1h", T0 + 1.0 * H): {"mean": 150.5, "capture_pct": 100 * 50 / 60,
                                             "valid": 1.0, "daqi": 3},
        (site, "o3", "15m", T0 + 900.0): {"mean": 40.0, "capture_pct": 100 * 5 / 15,
                                          "valid": 0.0},
        (site, "o3", "15m", T0 + 1800.0): {"mean": 40.0, "capture_pct": 100 * 5 / 15,
                                           "valid": 0.0},
        (site, "o3", "1h", T0 + 1.0 * H): {"mean": 40.0, "capture_pct": 100 * 10 / 60,
                                           "valid": 0.0},
        (site, "o3", "8h", T0 + 1.0 * H): {"capture_pct": 0.0, "valid": 0.0},
    }
    air, daqi = poll(lambda: stored(stack, prefix),
                     lambda g: len(g[0]) >= len(want) and bool(g[1]), 120,
                     "the points the running watermark closed")
    assert set(air) == set(want)
    for key, rec in want.items():
        assert air[key] == {k: [pytest.approx(v, rel=1e-10)] for k, v in rec.items()}, key
    assert daqi == {(site, T0 + 1.0 * H): [3.0]}
