"""The processing step without a broker: accounting, dead letters, re-keying, replays."""

from __future__ import annotations

import base64
import json

import pytest

from thurrock_streams.engine.codec import decode_state, encode_state
from thurrock_streams.engine.processor import Processor, SiteState
from thurrock_streams.engine.windows import EngineConfig
from thurrock_streams.readings import RawMessage
from thurrock_streams.registry import Registry
from thurrock_streams.traffic import TrafficPipeline

SITE = 'A13, "EB"=1'


def pipeline() -> TrafficPipeline:
    return TrafficPipeline(EngineConfig((60, 900), 30.0, 300.0), Registry({}, {}))


def m(offset: int, value, partition: int = 0, key: bytes | None = b"k") -> RawMessage:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawMessage("traffic.readings", partition, offset, key, raw)


def r(ts: float, speed: float = 50.0, **kw) -> dict:
    return {"site_id": SITE, "ts": ts, "lane": 1, "speed_kph": speed, **kw}


FEED = [
    m(0, r(10)), m(1, r(20, 100, **{"class": "hgv"})),
    m(2, {"site_id": SITE, "columns": {"ts": [70, 80, 200], "lane": [1, 2, 3],
                                       "speed_kph": [60, 300, 0]}}),
    m(3, b"not json"), m(4, r(15)), m(5, r(10_000)),
]


def test_step_counts_every_reading_once() -> None:
    p = Processor(pipeline())
    out = p.step(FEED, {}, now=1000.0)
    c = p.counters
    assert c.readings_in == 8
    assert c.accepted == 4
    assert c.deadlettered == {"range": 1, "decode": 1, "late": 1, "future": 1}
    assert c.readings_in == c.accepted + sum(c.deadlettered.values())
    dead = {d["offset"]: d for _, d in out.deadletters}
    assert dead[2]["row"] == 1 and dead[2]["reason"] == "range"
    assert dead[3]["row"] is None and base64.b64decode(dead[3]["value_b64"]) == b"not json"
    assert dead[4]["reason"] == "late" and dead[5]["reason"] == "future"
    assert set(dead[2]) == {"reason", "detail", "topic", "partition", "offset", "row",
                            "value_b64"}
    windows = [(a["window"], a["ts"], a["count"]) for _, a in out.aggregates]
    assert windows == [("1m", 60.0, 2), ("1m", 120.0, 1)]


def test_replay_after_stored_state_is_skipped() -> None:
    p = Processor(pipeline())
    first = p.step(FEED, {}, now=1000.0)
    stored = {s: SiteState.decode(st.encode()) for s, st in first.changed.items()}
    again = p.step(FEED, stored, now=1000.0)
    assert again.aggregates == []
    # Only the message with no readable site cannot be matched to a state.
    assert [d["reason"] for _, d in again.deadletters] == ["decode"]
    assert p.counters.replayed_skipped == 7


def test_replay_without_stored_state_reproduces_the_same_outputs() -> None:
    a = Processor(pipeline()).step(FEED, {}, now=1000.0)
    b = Processor(pipeline()).step(FEED, {}, now=1000.0)
    assert a.aggregates == b.aggregates and a.deadletters == b.deadletters


def test_wrong_partition_is_rekeyed_not_processed() -> None:
    p = Processor(pipeline(), partitions_of=lambda sites: [3] * len(sites))
    out = p.step([m(0, r(10), partition=1, key=None), m(1, r(20), partition=3)], {}, now=1e9)
    assert [(s, msg.offset) for s, msg in out.rekey] == [(SITE, 0)]
    assert p.counters.readings_in == 1 and p.counters.rekeyed_messages == 1
    fwd = RawMessage("traffic.readings", 1, 0, SITE.encode(), out.rekey[0][1].value,
                     forwarded=True)
    out2 = p.step([fwd], out.changed, now=1e9)
    assert out2.rekey == [] and p.counters.accepted == 2
    assert out2.changed[SITE].applied == {"traffic.readings:3": 1, "traffic.readings:1": 0}


def test_a_running_watermark_closes_open_windows() -> None:
    p = Processor(pipeline())
    out = p.step([m(0, r(10)), m(1, r(70))], {}, now=1e9)
    assert out.aggregates == []
    assert p.run_on(SITE, out.changed[SITE], 70.0 + 10).changed == {}  # nothing closes
    flushed = p.run_on(SITE, out.changed[SITE], 70.0 + 2000)
    assert [(a["window"], a["ts"], a["count"]) for _, a in flushed.aggregates] == [
        ("1m", 60.0, 1), ("1m", 120.0, 1), ("15m", 900.0, 2)]
    # the input state is not modified
    assert out.changed[SITE].windows.buf_ts.tolist() == [10.0, 70.0]


def test_empty_window_record_has_count_and_flow_only() -> None:
    p = Processor(pipeline())
    out = p.step([m(0, r(10)), m(1, r(200))], {}, now=1e9)
    empty = [a for _, a in out.aggregates if a["count"] == 0]
    assert empty == [{"site_id": SITE, "window": "1m", "start": 60.0, "ts": 120.0,
                      "count": 0, "flow_vph": 0.0}]


def test_codec_refuses_foreign_bytes() -> None:
    with pytest.raises(ValueError, match="not a Thurrock"):
        decode_state(b"\x80\x04pickle")
    back = decode_state(encode_state({"x": float("-inf"), "nested": {"k": [1, 2]}}))
    assert back == {"x": float("-inf"), "nested": {"k": [1, 2]}}


def test_a_huge_integer_costs_its_row_not_the_frame() -> None:
    # issue 12, item 2: 10**400 made the whole step raise, and the agent's fallback then
    # dead-lettered the whole frame as ``internal``.
    frame = (b'{"site_id": "S", "columns": {"ts": [10, 20, 30], "lane": [1, 1, 1],'
             b' "speed_kph": [50, 1' + b"0" * 400 + b', 60]}}')
    p = Processor(pipeline())
    out = p.step([m(0, frame)], {}, now=1e9)
    assert [(d["offset"], d["row"], d["reason"]) for _, d in out.deadletters] == [(0, 1, "range")]
    assert p.counters.accepted == 2 and p.counters.readings_in == 3


class _Poisoned(TrafficPipeline):
    """A pipeline whose kernel fails on one speed (a stand-in for an unforeseen bug)."""

    def on_accept(self, carry, ts, cols) -> None:  # type: ignore[no-untyped-def]
        if (cols["speed_kph"] == 42.0).any():
            raise RuntimeError("poisoned reading")
        super().on_accept(carry, ts, cols)


def test_a_failed_batch_is_retried_one_by_one_and_counted_once() -> None:
    """The failed batch attempt counts nothing: 4 readings, 3 accepted, 1 ``internal``."""
    p = Processor(_Poisoned(EngineConfig((60, 900), 30.0, 300.0), Registry({}, {})))
    feed = [m(0, r(10, site_id="a")), m(1, r(11, 42.0, site_id="b")),
            m(2, r(12, site_id="c")), m(3, r(13, site_id="d"))]
    out = p.step_isolating(feed, {}, now=100.0)
    c = p.counters
    assert (c.readings_in, c.accepted, c.deadlettered) == (4, 3, {"internal": 1})
    assert [(d["offset"], d["reason"]) for _, d in out.deadletters] == [(1, "internal")]
    assert sorted(out.changed) == ["a", "c", "d"]


def beat(offset: int, ts: float, site: str = SITE, **extra) -> RawMessage:
    return m(offset, {"site_id": site, "ts": ts, "heartbeat": True, **extra})


def test_heartbeats_close_windows_count_apart_and_bad_ones_are_dead_lettered() -> None:
    p = Processor(pipeline())
    feed = [m(0, r(10)), beat(1, 200.0), m(2, r(100)),  # 100: its window closed (late)
            beat(3, 5e9), beat(4, 100.0), beat(5, "yesterday"), beat(6, 300.0, lane=1),
            m(7, r(250))]
    out = p.step(feed, {}, now=1000.0)
    c = p.counters
    assert (c.readings_in, c.accepted, c.deadlettered) == (3, 2, {"late": 1})
    assert (c.heartbeats_in, c.heartbeats, c.heartbeats_deadlettered) == \
        (5, 2, {"future": 1, "schema": 2})
    dead = {d["offset"]: d["reason"] for _, d in out.deadletters}
    assert dead == {2: "late", 3: "future", 5: "schema", 6: "schema"}
    # the heartbeat at 200 closed the 1-minute windows up to 170 (200 - 30 s lateness):
    # [0, 60) and the empty [60, 120); the reading at 250 then closed [120, 180)
    assert [(a["window"], a["ts"], a["count"]) for _, a in out.aggregates] == [
        ("1m", 60.0, 1), ("1m", 120.0, 0), ("1m", 180.0, 0)]


def test_a_vehicle_after_a_quiet_spell_counts_in_its_window() -> None:
    """The night road of issue #13: one vehicle, 90 s of quiet (the watermark runs on
    with the clock), the next vehicle: counted, and the 15-minute window holds both."""
    p = Processor(pipeline())
    out = p.step([m(0, r(10))], {}, now=10.0)
    st = out.changed[SITE]
    quiet = p.run_on(SITE, st, 10.0 + 90.0)  # 90 s of quiet, caught up
    st = quiet.changed.get(SITE, st)
    assert [(a["window"], a["ts"], a["count"]) for _, a in quiet.aggregates] == [
        ("1m", 60.0, 1)]
    out = p.step([m(1, r(100))], {SITE: st}, now=100.0)
    assert p.counters.deadlettered == {}
    st = out.changed[SITE]
    end = p.run_on(SITE, st, 100.0 + 2000)
    assert [(a["window"], a["ts"], a["count"]) for _, a in end.aggregates][-1] == \
        ("15m", 900.0, 2)


def test_dead_letters_of_a_big_frame_stay_sendable_and_carry_its_bytes_once() -> None:
    """A frame over the dead-letter value limit: its bad rows' records carry its first
    bytes once and point to that record after, so none exceeds what a producer sends."""
    from thurrock_streams.engine.processor import MAX_DEAD_VALUE

    n = 60_000
    cols = {"ts": [10.0] * n, "lane": [1] * n, "speed_kph": [50.0] * (n - 3) + [999.0] * 3}
    frame = m(0, {"site_id": SITE, "columns": cols})
    assert len(frame.value or b"") > MAX_DEAD_VALUE
    p = Processor(pipeline())
    out = p.step([frame], {}, now=100.0)
    dead = [d for _, d in out.deadletters]
    assert [d["row"] for d in dead] == [n - 3, n - 2, n - 1]
    sizes = [len(json.dumps(d)) for d in dead]
    assert max(sizes) < 1_000_000 and sizes[1] < 1000 and sizes[2] < 1000
    assert base64.b64decode(dead[0]["value_b64"]) == (frame.value or b"")[:MAX_DEAD_VALUE]
    assert "first" in dead[0]["detail"] and "first dead letter" in dead[1]["detail"]
    assert p.counters.readings_in == n and p.counters.deadlettered == {"range": 3}
