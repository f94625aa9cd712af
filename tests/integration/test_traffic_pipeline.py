"""The traffic pipeline end to end on the real broker and store (CONTRACT.md §1–§4)."""

from __future__ import annotations

import base64
import json
import random
import time
from typing import Any

import pytest

from thurrock_streams.stack import StackConfig

from .feeds import T0
from .harness import consume_all, poll, send, series, wait_for

pytestmark = pytest.mark.integration


def hm(*v: float) -> float:
    return len(v) / sum(1 / x for x in v)


def stored(stack: StackConfig, site: str) -> dict[tuple[str, float], dict[str, list[float]]]:
    """{(window, ts): {field: [values written]}} for one site."""
    out: dict[tuple[str, float], dict[str, list[float]]] = {}
    for key, fields in series(stack, "traffic", site).items():
        tags = dict(key)
        if tags["site_id"] != site:
            continue
        for name, pts in fields.items():
            for ts, value in pts:
                out.setdefault((tags["window"], ts), {}).setdefault(name, []).append(value)
    return out


def test_edge_case_feed_gives_exact_aggregates_and_dead_letters(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    worker = make_worker(IDLE_FLUSH_S="3")
    site = f'{prefix}A13 EB, "Stifford"=J30'
    plain = f"{prefix}M25-J31"
    r = lambda ts, speed, **kw: {"site_id": site, "ts": T0 + ts, "lane": 1,  # noqa: E731
                                 "speed_kph": speed, **kw}
    good_frame = {"site_id": site, "columns": {
        "ts": [T0 + 65, T0 + 70, T0 + 75], "lane": [1, 2, 9], "speed_kph": [60, 300, 40],
        "class": ["car", "car", "hgv"]}}
    feed: list[tuple[bytes | None, Any]] = [
        (site.encode(), r(5, 50, **{"class": "car"})),
        (site.encode(), r(30, 80, **{"class": "hgv"})),
        (site.encode(), r(20, 100)),                          # out of order, in lateness
        (site.encode(), good_frame),                          # frame: rows 1 and 2 are bad
        (site.encode(), r(190, 70)),                           # minute 2 stays empty
        (site.encode(), r(100, 55)),                           # minute 1 closed at W=190: late
        (site.encode(), r(250, 90)),
        (site.encode(), {**r(0, 50), "ts": time.time() + 3600}),   # future
        (site.encode(), {**r(0, 50), "ts": "2023-11-14T21:04:10+00:00"}),  # ISO, accepted
        (site.encode(), b"{not json"),                          # decode
        (site.encode(), b"\xff\xfe\x00"),                       # decode
        (site.encode(), {k: v for k, v in r(251, 50).items() if k != "lane"}),  # schema
        (site.encode(), r(252, float("nan"))),                  # NaN literal: range
        (site.encode(), r(253, 50, **{"class": "tractor"})),   # schema
        (site.encode(), {**r(254, 50), "site_id": ""}),         # schema
        (site.encode(), {"site_id": site, "columns": {"ts": [1, 2], "lane": [1]}}),  # schema
        (plain.encode(), {"site_id": plain, "ts": T0 + 30, "lane": 2, "speed_kph": 0.0}),
    ]
    send(stack, f"{prefix}traffic.readings", feed)
    readings = 19  # every frame row is a reading; a frame that cannot be read counts once
    dead = consume_all(stack, f"{prefix}readings.deadletter", expect=11, timeout=60)
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for rec in dead:
        d = json.loads(rec.value)
        by_reason.setdefault(d["reason"], []).append(d)
    assert {k: len(v) for k, v in by_reason.items()} == {
        "range": 3, "late": 1, "future": 1, "decode": 2, "schema": 4}
    frame_rows = sorted(d["row"] for d in by_reason["range"] if d["row"] is not None)
    assert frame_rows == [1, 2]
    assert all(d["topic"] == f"{prefix}traffic.readings"
               for recs in by_reason.values() for d in recs)
    raw = base64.b64decode(by_reason["late"][0]["value_b64"])
    assert json.loads(raw)["ts"] == T0 + 100

    want = {
        ("1m", T0 + 60.0): {"count": 3, "flow_vph": 180.0, "mean_speed_kph": 230 / 3,
                            "space_mean_speed_kph": hm(50, 80, 100), "p85_speed_kph": 94.0,
                            "hgv_pct": 100 / 3, "density_vpkm": 180 / hm(50, 80, 100),
                            "congestion_index": 1 - hm(50, 80, 100) / 100},
        ("1m", T0 + 120.0): {"count": 1, "flow_vph": 60.0, "mean_speed_kph": 60.0,
                             "space_mean_speed_kph": 60.0, "p85_speed_kph": 60.0,
                             "hgv_pct": 0.0, "density_vpkm": 1.0, "congestion_index": 0.4},
        ("1m", T0 + 180.0): {"count": 0, "flow_vph": 0.0},
        ("1m", T0 + 240.0): {"count": 1, "flow_vph": 60.0, "mean_speed_kph": 70.0,
                             "space_mean_speed_kph": 70.0, "p85_speed_kph": 70.0,
                             "hgv_pct": 0.0, "density_vpkm": 60 / 70, "congestion_index": 0.3},
        ("1m", T0 + 300.0): {"count": 2, "flow_vph": 120.0, "mean_speed_kph": 70.0,
                             "space_mean_speed_kph": hm(90, 50), "p85_speed_kph": 84.0,
                             "hgv_pct": 0.0, "density_vpkm": 120 / hm(90, 50),
                             "congestion_index": 1 - hm(90, 50) / 100},
        ("15m", T0 + 900.0): {"count": 7, "flow_vph": 28.0, "mean_speed_kph": 500 / 7,
                              "space_mean_speed_kph": hm(50, 80, 100, 60, 70, 90, 50),
                              "p85_speed_kph": 91.0, "hgv_pct": 100 / 7,
                              "density_vpkm": 28 / hm(50, 80, 100, 60, 70, 90, 50),
                              "congestion_index": 1 - hm(50, 80, 100, 60, 70, 90, 50) / 100},
    }
    got = poll(lambda: stored(stack, site), lambda s: len(s) >= len(want), 60,
                   "all windows of the edge-case site in the store")
    assert set(got) == set(want)
    for key, fields in want.items():
        assert set(got[key]) == set(fields), key
        for name, value in fields.items():
            assert got[key][name] == [pytest.approx(value, rel=1e-9)], (key, name)

    # A site whose only vehicle stood still: speed fields other than the means are absent.
    still = wait_for(lambda: stored(stack, plain) or None, 30, "the stopped-vehicle site")
    assert still[("1m", T0 + 60.0)] == {"count": [1], "flow_vph": [60.0], "mean_speed_kph": [0.0],
                                        "p85_speed_kph": [0.0], "hgv_pct": [0.0]}

    c = poll(lambda: worker.counters()["pipelines"]["traffic"],
             lambda x: x["readings_in"] >= readings, 30, "the counters")
    assert c["readings_in"] == readings
    assert c["readings_in"] == c["accepted"] + sum(c["deadlettered"].values())
    assert c["accepted"] == 8


def test_missing_and_wrong_keys_are_rekeyed_by_the_site_in_the_value(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    make_worker(IDLE_FLUSH_S="3")
    site = f"{prefix}A1089-TILBURY-SB"
    keys = [site.encode(), None, b"someone-else", b""]
    # All within 85 s: whatever order re-keying gives them, no window can close early.
    feed = [(keys[i % 4], {"site_id": site, "ts": T0 + i * 2.0, "lane": 1, "speed_kph": 50.0})
            for i in range(43)]
    send(stack, f"{prefix}traffic.readings", feed)
    got = poll(lambda: stored(stack, site), lambda s: len(s) >= 3, 60,
                   "the re-keyed site's windows")
    assert got[("1m", T0 + 60.0)]["count"] == [30]
    assert got[("1m", T0 + 120.0)]["count"] == [13]
    assert got[("15m", T0 + 900.0)]["count"] == [43]


def test_a_mixed_backlog_with_bad_keys_is_counted_exactly(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """20,000 single readings, one in ten with a missing or wrong key, valid and invalid
    ones mixed, consumed by one worker from a backlog: every reading is accepted or
    dead-lettered once, and none is skipped as replayed (nothing was replayed)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    rng = random.Random(12)
    topic = f"{prefix}traffic.readings"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    sites = [f"{prefix}S{i:02d}" for i in range(40)]
    start = (int(time.time()) // 900) * 900 - 900.0  # no window of the feed can close
    feed: list[tuple[bytes | None, Any]] = []
    expect = {"accepted": 0, "range": 0, "schema": 0, "decode": 0}
    for i in range(20_000):
        site = rng.choice(sites)
        u = rng.random()
        key: bytes | None = site.encode()
        if u < 0.05:
            key = None
        elif u < 0.10:
            key = rng.choice(sites).encode() + b"-wrong"
        value: Any = {"site_id": site, "ts": start + (i % 40) * 0.5, "lane": 1,
                      "speed_kph": 50.0}
        v = rng.random()
        if v < 0.10:
            value["speed_kph"] = 300.0
            expect["range"] += 1
        elif v < 0.20:
            del value["lane"]
            expect["schema"] += 1
        elif v < 0.25:
            value = b"\x00 not a reading"
            expect["decode"] += 1
        else:
            expect["accepted"] += 1
        feed.append((key, value))
    send(stack, topic, feed)
    w = make_worker(IDLE_FLUSH_S="600")
    c = poll(lambda: w.counters()["pipelines"]["traffic"],
             lambda c: c["readings_in"] + c["replayed_skipped"] >= 20_000, 120,
             "the backlog to be counted")
    assert c["replayed_skipped"] == 0
    assert c["readings_in"] == 20_000
    assert c["rekeyed_messages"] > 1000
    assert c["accepted"] == expect["accepted"]
    assert c["deadlettered"] == {k: n for k, n in expect.items() if k != "accepted"}
    dead = consume_all(stack, f"{prefix}readings.deadletter", 20_000 - expect["accepted"])
    ids = {(d["topic"], d["partition"], d["offset"])
           for d in (json.loads(r.value) for r in dead)}
    assert len(dead) == len(ids) == 20_000 - expect["accepted"]
