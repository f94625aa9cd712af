"""Sites stepped together (``engine/across.py``) against one site at a time, the judge.

``Processor(across=False)`` is the per-site path the window tests hold to the
one-event-at-a-time reference (tests/unit/test_windows.py). Random multi-site feeds
(single readings, frames, bad rows, unreadable messages, heartbeats good and bad,
late and future readings, re-keyed and forwarded messages, replays, quiet sites, air
samples with any pollutants) go through both; every output must be the same, bit for bit
and in the same order: aggregates, dead letters (with reasons and details), messages to
re-key, changed states (their changelog bytes), counters.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.air import AirPipeline
from thurrock_streams.engine.codec import encode_state
from thurrock_streams.engine.processor import Processor, SiteState, StepOutput
from thurrock_streams.engine.windows import SiteWindows
from thurrock_streams.readings import POLLUTANT_FIELDS, RawMessage
from thurrock_streams.traffic import TrafficPipeline

#: One registered site (free flow 113 km/h, data/sites.json), the rest at the default.
SITES = ("A13-STIFFORD-EB", "b", "c 2", "d")
NOW = 3900.0  # readings past 4200 s are future (300 s skew); lateness 30 s
TOPIC = {"traffic": "traffic.readings", "air": "air.readings"}


def partition_of(site: str) -> int:
    return SITES.index(site) % 2


def partitions_of(sites: list[str]) -> list[int]:
    return [partition_of(site) for site in sites]


def pipeline(kind: str, stuck: bool = False) -> Any:
    if kind == "air":
        return AirPipeline.create(30.0, 300.0, stuck_samples=3 if stuck else None,
                                  stuck_fields=("no2_ugm3",) if stuck else ())
    return TrafficPipeline.create(30.0, 300.0, stuck_samples=3 if stuck else None,
                                  stuck_fields=("speed_kph",) if stuck else ())


times = st.integers(0, 5000).map(float) | st.floats(0, 5000, allow_nan=False)
speeds = st.sampled_from([0.0, 12.5, 50.0, 50.0, 88.8, 130.0, 300.0])  # 300: range


@st.composite
def reading(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    ts = draw(times)
    if kind == "traffic":
        r: dict[str, Any] = {"ts": ts, "lane": draw(st.sampled_from([1, 2, 9])),
                             "speed_kph": draw(speeds)}
        cls = draw(st.sampled_from([None, "car", "hgv", "bus", "tram"]))  # tram: schema
        if cls is not None:
            r["class"] = cls
        return r
    r = {"ts": ts}
    for f in draw(st.lists(st.sampled_from(list(POLLUTANT_FIELDS)), max_size=3)):
        r[f] = draw(st.sampled_from([0.0, 11.0, 40.5, 40.5, 120.0, -1.0]))  # -1: range
    return r


#: Message mixes (r reading, f frame, h heartbeat, b bad heartbeat, x unreadable): a
#: site with a heartbeat in the batch is stepped on its own, so most feeds have few.
MIXES = ("rrrrrrrrrrrrrrrf", "rrrrrrrrffx", "rrrrrffhhbx")


@st.composite
def message(draw: st.DrawFn, kind: str, mix: str) -> tuple[str | None, bytes]:
    site = draw(st.sampled_from(SITES))
    what = draw(st.sampled_from(mix))
    if what == "x":
        return None, b"{not json"
    if what == "h":
        return site, orjson.dumps({"site_id": site, "ts": draw(times), "heartbeat": True})
    if what == "b":  # a heartbeat with a reading field: schema
        return site, orjson.dumps({"site_id": site, "ts": draw(times), "heartbeat": True,
                                   "lane": 1})
    if what == "f":
        rows = draw(st.lists(reading(kind), min_size=0, max_size=6))
        names = sorted({k for r in rows for k in r} | {"ts"})
        cols = {k: [r.get(k) for r in rows] for k in names}
        return site, orjson.dumps({"site_id": site, "columns": cols})
    return site, orjson.dumps({"site_id": site, **draw(reading(kind))})


def same(a: StepOutput, b: StepOutput) -> None:
    """Every output of two steps equal, bit for bit (orjson writes floats exactly)."""
    assert orjson.dumps(a.aggregates) == orjson.dumps(b.aggregates)
    assert a.deadletters == b.deadletters
    assert a.rekey == b.rekey
    assert list(a.changed) == list(b.changed)
    assert [s.encode() for s in a.changed.values()] == [s.encode() for s in b.changed.values()]
    for s in b.changed.values():  # the direct encoder writes what the generic walk writes
        assert s.encode() == encode_state({"w": s.windows.to_state(), "applied": s.applied,
                                           "carry": s.carry})
    assert a.counts == b.counts


def feed_batches(kind: str, msgs: list[tuple[str | None, bytes]], parts: list[int],
                 cuts: list[int]) -> tuple[list[RawMessage], list[int]]:
    """The messages with their offsets per source partition, and the batch bounds
    ``cuts`` make (each batch is ``raws[a:z]`` for consecutive bounds)."""
    offsets = [0, 0]
    raws = []
    for (site, value), p in zip(msgs, parts, strict=False):
        raws.append(RawMessage(TOPIC[kind], p, offsets[p], None if site is None
                               else site.encode(), value))
        offsets[p] += 1
    return raws, sorted({0, len(raws), *(c for c in cuts if 0 < c < len(raws))})


def drive(kind: str, msgs: list[tuple[str | None, bytes]], parts: list[int],
          cuts: list[int], replays: list[int], stored: list[int], quiet: list[float],
          stuck: bool = False, rekey: bool = True) -> tuple[Processor, Processor]:
    """Feed both processors batch by batch, as the agent would; compare each step."""
    judge = Processor(pipeline(kind, stuck), partitions_of if rekey else None, across=False)
    fast = Processor(pipeline(kind, stuck), partitions_of if rekey else None)
    states: tuple[dict[str, SiteState], dict[str, SiteState]] = ({}, {})
    raws, bounds = feed_batches(kind, msgs, parts, cuts)
    forwarded: list[RawMessage] = []
    for n, (a, z) in enumerate(itertools.pairwise(bounds)):
        batch = forwarded + raws[a:z]
        for _ in range(2 if n in replays else 1):  # a replay: all already applied
            outs = [proc.step(batch, st_, NOW)
                    for proc, st_ in zip((judge, fast), states, strict=True)]
            same(*outs)
            for out, st_ in zip(outs, states, strict=True):
                for site, state in out.changed.items():
                    st_[site] = SiteState.decode(state.encode()) if n in stored else state
        forwarded = [RawMessage(m.topic, m.partition, m.offset, s.encode(), m.value,
                                forwarded=True) for s, m in outs[0].rekey]
        if quiet and n < len(quiet):  # a quiet spell: every site's watermark runs on
            for site in sorted(states[0]):
                ran = [proc.run_on(site, st_[site], st_[site].windows.watermark + quiet[n])
                       for proc, st_ in zip((judge, fast), states, strict=True)]
                same(*ran)
                for out, st_ in zip(ran, states, strict=True):
                    st_.update(out.changed)
    assert judge.counters == fast.counters
    return judge, fast




@settings(max_examples=400)  # ≈ 7 s: the one test of every case together
@given(data=st.data(), kind=st.sampled_from(["traffic", "air"]), stuck=st.booleans())
def test_sites_together_equal_sites_one_at_a_time(data: st.DataObject, kind: str,
                                                   stuck: bool) -> None:
    msgs = data.draw(st.lists(message(kind, data.draw(st.sampled_from(MIXES))), min_size=4,
                              max_size=60))
    parts = data.draw(st.lists(st.integers(0, 1), min_size=len(msgs), max_size=len(msgs)))
    cuts = data.draw(st.lists(st.integers(0, 60), max_size=5))
    replays = data.draw(st.lists(st.integers(0, 5), max_size=2))
    stored = data.draw(st.lists(st.integers(0, 5), max_size=3))
    quiet = data.draw(st.lists(st.sampled_from([10.0, 95.0, 2000.0]), max_size=3))
    drive(kind, msgs, parts, cuts, replays, stored, quiet, stuck,
          rekey=data.draw(st.booleans()))


@given(data=st.data())
def test_single_readings_of_many_sites_in_time_order(data: st.DataObject) -> None:
    """The benchmark's shape: many sites, one reading per message, mostly in time order;
    in some feeds every n-th message of a site is a heartbeat (as ``sensors-sim run``
    sends them), so that many sites have only a heartbeat in a step."""
    n_sites = data.draw(st.integers(1, 40))
    gap = data.draw(st.sampled_from([5.0, 20.0, 61.0]))
    names = ["A13-STIFFORD-EB"] + [f"s{i:03d}" for i in range(1, n_sites)]
    beat_every = data.draw(st.sampled_from([0, 0, 2, 3]))  # a heartbeat every n-th round
    msgs = []
    for k in range(data.draw(st.integers(1, 8))):
        for i, site in enumerate(names):
            ts = k * gap + i * 0.25 + data.draw(st.sampled_from([0.0, 0.0, -90.0]))
            if beat_every and k % beat_every == beat_every - 1:
                msgs.append((site, orjson.dumps({"site_id": site, "ts": max(ts, 0.0),
                                                 "heartbeat": True})))
                continue
            msgs.append((site, orjson.dumps({"site_id": site, "ts": max(ts, 0.0), "lane": 1,
                                             "speed_kph": 40.0 + (i + k) % 7})))
    cuts = data.draw(st.lists(st.integers(0, len(msgs)), max_size=4))
    _judge, fast = drive("traffic", msgs, [0] * len(msgs), cuts, [], [0, 2], [],
                         rekey=False)
    assert fast.counters.readings_in + fast.counters.heartbeats_in == len(msgs)


def stored_b(buf_cols: dict[str, Any]) -> SiteState:
    """Site b's stored state: one reading at 10 s in its open windows, with ``buf_cols``."""
    return SiteState(SiteWindows(watermark=10.0, closed_until={60: -np.inf, 900: -np.inf},
                                 next_emit={60: 0.0, 900: 0.0}, buf_ts=np.array([10.0]),
                                 buf_cols=buf_cols, span_end={60: 60.0, 900: 900.0}))


def four_readings(**fields: Any) -> list[RawMessage]:
    """b at 20 and 200 s, c 2 at 30 and 100 s, each a single reading with ``fields``."""
    return [RawMessage("traffic.readings", 0, i, None, orjson.dumps(
        {"site_id": s, "ts": t, "lane": 1, "speed_kph": 60.0, **fields}))
        for i, (s, t) in enumerate([("b", 20.0), ("c 2", 30.0), ("b", 200.0),
                                    ("c 2", 100.0)])]


def test_a_state_unlike_the_batch_is_stepped_on_its_own() -> None:
    """A stored buffer with other columns than the batch's (an earlier release's state,
    which kept ``lane`` and ``length_m`` too): that site takes the per-site path, the
    others go together; outputs still agree."""
    odd = stored_b({"lane": np.array([1.0]), "speed_kph": np.array([50.0]),
                    "length_m": np.array([np.nan]), "class": np.array([-1], dtype=np.int8)})
    outs = [Processor(pipeline("traffic"), across=a).step(four_readings(), {"b": odd}, NOW)
            for a in (False, True)]
    same(*outs)
    # b's [0, 60) holds its stored reading and the new one; c 2's holds one
    assert [(s, r["ts"], r["count"]) for s, r in outs[1].aggregates] == [
        ("b", 60.0, 2), ("b", 120.0, 0), ("c 2", 60.0, 1)]
    # b's state (an earlier release's, which kept lane and length too) now keeps what the
    # traffic pipeline buffers, like every new state: the next step takes it together
    for out in outs:
        for site in ("b", "c 2"):
            w = out.changed[site].windows
            assert list(w.buf_cols) == ["speed_kph", "class"]
            assert all(v.size == w.buf_ts.size for v in w.buf_cols.values())
    # its stored reading (50 km/h at 10 s) and both new ones stay: [0, 900) is open
    assert outs[1].changed["b"].windows.buf_cols["speed_kph"].tolist() == [50.0, 60.0, 60.0]


def test_a_state_with_the_columns_in_other_dtypes_is_stepped_on_its_own() -> None:
    """A buffer with the pipeline's columns but not the batch's dtypes (speeds float32,
    classes int64) cannot be concatenated as the batch's: that site takes the per-site
    path; the outputs of both paths agree."""
    odd = stored_b({"speed_kph": np.array([50.0], dtype=np.float32),
                    "class": np.array([2], dtype=np.int64)})
    from thurrock_streams.engine.across import can_take
    p = pipeline("traffic")
    batch_cols = {"speed_kph": np.zeros(1), "class": np.zeros(1, dtype=np.int8)}
    assert not can_take(p.config, batch_cols)(odd.windows)
    outs = [Processor(p, across=a).step(four_readings(**{"class": "hgv"}), {"b": odd}, NOW)
            for a in (False, True)]
    same(*outs)
    # b's [0, 60): its stored hgv and the new one, so 100 % heavy goods vehicles
    assert [(s, r["ts"], r["count"], r.get("hgv_pct")) for s, r in outs[1].aggregates] == [
        ("b", 60.0, 2, 100.0), ("b", 120.0, 0, None), ("c 2", 60.0, 1, 100.0)]


def test_dead_letters_come_in_the_per_site_order() -> None:
    """Per site: its rejected rows, then its future readings, then its late ones (as
    ``_ingest`` writes them), sites in name order."""
    def msg(i: int, site: str, ts: float, speed: float = 50.0) -> RawMessage:
        return RawMessage("traffic.readings", 0, i, None, orjson.dumps(
            {"site_id": site, "ts": ts, "lane": 1, "speed_kph": speed}))

    first = [msg(0, "d", 500.0), msg(1, "b", 500.0)]
    feed = [msg(2, "d", 9000.0), msg(3, "d", 10.0), msg(4, "b", 9000.0), msg(5, "d", 9100.0),
            msg(6, "d", 20.0), msg(7, "d", 30.0, speed=999.0), msg(8, "b", 15.0)]
    outs = []
    for across in (False, True):
        p = Processor(pipeline("traffic"), across=across)
        states = p.step(first, {}, NOW).changed
        outs.append(p.step(feed, states, NOW))
    same(*outs)
    assert [(d["offset"], d["reason"]) for _, d in outs[1].deadletters] == [
        (4, "future"), (8, "late"),
        (7, "range"), (2, "future"), (5, "future"), (3, "late"), (6, "late")]


@given(rows=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([-np.inf, 0.0, -0.0, 1.5,
                                                                    2.0, 7.25, 60.0])),
                     max_size=30),
       in_order=st.booleans())
def test_the_running_maximum_per_site_equals_a_loop(rows: list[tuple[int, float]],
                                                    in_order: bool) -> None:
    """The watermark before each row (``_running_max``): rows grouped by site, in time
    order within each site (its shortcut) or not (its sort), against a plain loop."""
    from thurrock_streams.engine.across import _running_max

    rows = sorted(rows, key=(lambda r: r) if in_order else (lambda r: r[0]))
    site = np.array([s for s, _ in rows], dtype=np.int64)
    tv = np.array([t for _, t in rows], dtype=np.float64)
    expected, best, last = [], -np.inf, None
    for s, t in rows:
        best = t if s != last else max(best, t)
        last = s
        expected.append(best)
    got = _running_max(site, tv)
    assert np.array_equal(got, np.array(expected, dtype=np.float64))


def test_open_windows_keep_only_the_columns_the_aggregates_read() -> None:
    """Traffic keeps speed and class (lane and length are validated, then dropped); air
    keeps its six pollutants (temperature and humidity likewise), on both paths."""
    traffic = RawMessage("traffic.readings", 0, 0, None, orjson.dumps(
        {"site_id": "b", "ts": 20.0, "lane": 2, "speed_kph": 60.0, "length_m": 4.5,
         "class": "car"}))
    air = RawMessage("air.readings", 0, 0, None, orjson.dumps(
        {"site_id": "b", "ts": 20.0, "no2_ugm3": 41.0, "temperature_c": 11.5,
         "humidity_pct": 80.0}))
    for kind, msg, kept in (("traffic", traffic, ["speed_kph", "class"]),
                            ("air", air, list(POLLUTANT_FIELDS))):
        for across in (False, True):
            w = Processor(pipeline(kind), across=across).step([msg], {}, NOW).changed["b"]
            assert list(w.windows.buf_cols) == kept, (kind, across)
            assert w.windows.buf_ts.tolist() == [20.0]
