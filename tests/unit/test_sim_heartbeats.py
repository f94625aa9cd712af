"""Heartbeats from the simulator (CONTRACT.md §2-3): live ones on the minute, the closing
one of a replay, those ``generate`` writes, and the summaries that count them apart.

Expected instants are written out from the rules (multiples of the interval; the end of
the last 15-minute or 1-hour window plus the allowed lateness); orders and counts are
checked against the reference checker of ``test_sim_contract``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sensors_sim import FaultRates, FeedOptions, build_feed, write_feed
from sensors_sim.batch import Batch
from sensors_sim.cli import build_parser, main
from sensors_sim.errors import UsageError
from sensors_sim.expect import expect_site
from sensors_sim.faults import plan_messages
from sensors_sim.heartbeat import LAST_WINDOW_S
from sensors_sim.live import LiveRunner
from sensors_sim.replay import Closing, replay
from tests.unit.test_sim_cli import ClockedSink, FakeClock
from tests.unit.test_sim_contract import beat_verdicts, heartbeat_ts, read_lines
from tests.unit.test_sim_replay import RecordingSink
from thurrock_streams.air import PERIOD_TAGS
from thurrock_streams.registry import load_registry
from thurrock_streams.traffic import WINDOW_TAGS

START = 1_717_372_800.0  # 2024-06-03T00:00:00Z, a Monday
H = 3600.0
MIN = 60.0
TOPIC = {"A13-STIFFORD-EB": "traffic.readings", "A128-ORSETT-NB": "traffic.readings",
         "AQ-TILBURY-CALCUTTA-RD": "air.readings"}


def rows_of(line: dict[str, Any]) -> list[float]:
    """The ts of every row of a reading line (none for undecodable bytes or heartbeats)."""
    value = line.get("value")
    if not isinstance(value, dict) or heartbeat_ts(line) is not None:
        return []
    raw = value["columns"]["ts"] if "columns" in value else [value.get("ts")]
    return [float(t) for t in raw if isinstance(t, int | float)]


def site_of(line: dict[str, Any]) -> str | None:
    value = line.get("value")
    return value.get("site_id") if isinstance(value, dict) else None


def check_claims(lines: list[dict[str, Any]], trusted: Any = lambda i, t: True) -> int:
    """Every heartbeat comes after every (trusted) reading of its site stamped before it
    and after none stamped after it; return how many heartbeats there are."""
    n = 0
    for i, line in enumerate(lines):
        hb = heartbeat_ts(line)
        if hb is None:
            continue
        n += 1
        site = site_of(line)
        assert line["key"] == site and line["topic"] == TOPIC.get(site, line["topic"])
        for j, other in enumerate(lines):
            if j == i or site_of(other) != site:
                continue
            for t in rows_of(other):
                if not trusted(j, t):
                    continue
                if t < hb:
                    assert j < i, (site, hb, t, "a reading stamped before it comes after it")
                if t > hb:
                    assert j > i, (site, hb, t, "a reading stamped after it went first")
    return n


def beats_by_site(lines: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in lines:
        hb = heartbeat_ts(line)
        if hb is not None:
            out.setdefault(str(site_of(line)), []).append(hb)
    return out


# --- live: `sensors-sim run` ------------------------------------------------------------

def live(t0: float, duration: float, heartbeat_s: float, frames: int = 0,
         faults: FaultRates | None = None, sites: tuple[str, ...] = tuple(TOPIC)
         ) -> tuple[Any, ClockedSink]:
    clock = FakeClock(t0)
    sink = ClockedSink(clock)
    opts = FeedOptions(start=t0, duration_s=1.0, seed=3, frames=frames,
                       faults=faults or FaultRates(), sites=sites, heartbeat_s=heartbeat_s)
    runner = LiveRunner(load_registry(), opts, sink, clock=clock.now, sleep=clock.sleep)
    return runner.run(duration_s=duration), sink


@pytest.mark.parametrize("frames", [0, 6])
def test_live_heartbeats_on_the_minute_after_the_sites_readings(frames: int) -> None:
    # 02:04:10 UTC (03:04 BST): a quiet night, crossing the 5-minute block at 02:05.
    t0 = START + 2 * H + 250.0
    summary, sink = live(t0, 600.0, 60.0, frames)
    want = [START + 2 * H + MIN * k for k in range(5, 15)]  # 02:05:00 ... 02:14:00
    assert beats_by_site(sink.lines) == dict.fromkeys(TOPIC, want)
    for line, sent in zip(sink.lines, sink.times, strict=True):
        hb = heartbeat_ts(line)
        if hb is not None:
            assert sent == pytest.approx(hb, abs=1e-6)  # sent at its instant, not later
    assert check_claims(sink.lines) == 30
    # A quiet road: some minutes of the A128 have no vehicle, and heartbeats all the same.
    a128 = {math.floor(t / MIN) for line in sink.lines if site_of(line) == "A128-ORSETT-NB"
            for t in rows_of(line)}
    assert len(a128) < 10
    readings = sum(len(rows_of(line)) for line in sink.lines)
    assert summary.heartbeats == 30
    assert summary.readings == readings > 50
    assert summary.messages == len(sink.lines)
    records, reasons, beats = beat_verdicts(sink.lines, sink.times)
    assert (records, reasons, beats) == (readings, Counter(), Counter(heartbeats=30))


def test_live_heartbeat_interval_is_settable_and_can_be_off() -> None:
    t0 = START + 8 * H + 10.0
    _, sink = live(t0, 100.0, 45.0, sites=("AQ-TILBURY-CALCUTTA-RD",))
    # multiples of 45 s of the epoch in (08:00:10, 08:01:50]
    assert beats_by_site(sink.lines) == {"AQ-TILBURY-CALCUTTA-RD": [START + 8 * H + 45.0,
                                                                    START + 8 * H + 90.0]}
    summary, sink = live(t0, 100.0, 0.0, sites=("AQ-TILBURY-CALCUTTA-RD",))
    assert beats_by_site(sink.lines) == {} and summary.heartbeats == 0
    assert summary.readings == summary.messages == len(sink.lines) == 1  # 08:01:00


@pytest.mark.parametrize("frames", [0, 6])
def test_live_heartbeats_with_faults_keep_their_promise(frames: int) -> None:
    """Late deliveries hold a heartbeat back (or leave it out, when a reading stamped after
    it has gone first); clocks skewed ahead are broken clocks, not covered; dropouts send
    nothing. The summary still agrees with the reference checker."""
    faults = FaultRates(out_of_order=0.05, skew=0.02, skew_direction="ahead", duplicate=0.02,
                        malformed=0.02, dropout=0.1)
    t0 = START + 8 * H + 250.0
    summary, sink = live(t0, 900.0, 60.0, frames, faults)
    times = sink.times

    def trusted(j: int, t: float) -> bool:
        return t <= times[j] + 300  # skewed ahead: 10 min-2 h ahead of the clock

    n = check_claims(sink.lines, trusted)
    want = {START + 8 * H + MIN * k for k in range(5, 20)}
    got = beats_by_site(sink.lines)
    for site, beats in got.items():
        assert beats == sorted(beats) and set(beats) <= want, site
    assert 0 < n == summary.heartbeats < 3 * len(want)
    for line, sent in zip(sink.lines, times, strict=True):
        hb = heartbeat_ts(line)
        if hb is not None:  # held back at most by the longest late delivery of the site
            assert hb <= sent + 1e-6 and sent - hb <= (28.0 if "AQ" not in line["key"] else 20.0)
    records, reasons, beats = beat_verdicts(sink.lines, times)
    assert records == summary.readings
    assert dict(reasons) == {k: v for k, v in summary.expected_deadletter.items() if v}
    assert beats == Counter(heartbeats=summary.heartbeats)
    assert summary.messages == len(sink.lines)


# --- generate ---------------------------------------------------------------------------

def test_generate_writes_heartbeats_only_when_asked() -> None:
    registry = load_registry()
    sites = ("A128-*", "AQ-GRAYS-LONDON-RD")
    plain = FeedOptions(start=START + 7 * H, duration_s=1800.0, seed=2, sites=sites)
    beating = FeedOptions(start=START + 7 * H, duration_s=1800.0, seed=2, sites=sites,
                          heartbeat_s=60.0)
    lines0, summary0 = build_feed(registry, plain)
    lines1, summary1 = build_feed(registry, beating)
    without = [json.loads(x) for x in lines0]
    with_ = [json.loads(x) for x in lines1]
    assert summary0.heartbeats == 0 and not beats_by_site(without)
    # the readings are the same lines, in the same order; heartbeats come in between
    assert [x for x in with_ if heartbeat_ts(x) is None] == without
    want = [START + 7 * H + MIN * k for k in range(1, 31)]  # 07:01 ... 07:30, the end included
    assert beats_by_site(with_) == dict.fromkeys(
        ["A128-ORSETT-NB", "A128-ORSETT-SB", "AQ-GRAYS-LONDON-RD"], want)
    assert check_claims(with_) == 90
    assert summary1.heartbeats == 90
    assert summary1.readings == summary0.readings == len(without)
    assert summary1.messages == len(with_) == len(without) + 90
    assert summary1.to_json()["heartbeats"] == 90 and summary1.to_json()["heartbeat_s"] == 60.0


def test_generated_frames_never_span_a_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    opts = FeedOptions(start=START + 8 * H, duration_s=1800.0, seed=5, frames=25,
                       sites=("A13-BAKER-*", "AQ-TILBURY-*"), heartbeat_s=300.0)
    summary = write_feed(path, load_registry(), opts)
    lines = read_lines(path)
    for line in lines:
        ts = rows_of(line)
        assert len({math.floor(t / 300.0) for t in ts}) <= 1
        assert len(ts) <= 25
    assert check_claims(lines) == summary.heartbeats == 3 * 6  # 08:05 ... 08:30
    doc = json.loads(path.with_name(path.name + ".summary.json").read_text())
    assert doc["heartbeats"] == 18
    assert doc["readings"] == sum(len(rows_of(x)) for x in lines)
    assert doc["messages"] == len(lines)


@pytest.mark.parametrize("frames", [0, 7])
def test_generated_heartbeats_and_faults_match_the_reference(tmp_path: Path, frames: int) -> None:
    """Clocks skewed behind are `late` once a heartbeat has moved the watermark, even for
    a site's first reading; the summary knows it, reason by reason."""
    path = tmp_path / "faulty.jsonl"
    rates = FaultRates(dropout=0.05, spike=0.01, skew=0.02, duplicate=0.01, out_of_order=0.03,
                       malformed=0.02)
    opts = FeedOptions(start=START + 7 * H, duration_s=2 * H, seed=3, faults=rates,
                       frames=frames, heartbeat_s=60.0,
                       sites=("A1014-*", "A126-*", "AQ-CORRINGHAM-*", "AQ-GRAYS-*"))
    write_feed(path, load_registry(), opts)
    doc = json.loads(path.with_name(path.name + ".summary.json").read_text())
    lines = read_lines(path)
    records, reasons, beats = beat_verdicts(lines, clock=opts.end)
    assert records == doc["readings"]
    assert {k: v for k, v in doc["expected_deadletter"].items() if v} == dict(reasons)
    assert beats == Counter(heartbeats=doc["heartbeats"])
    assert 0 < doc["heartbeats"] <= 6 * 120
    assert doc["messages"] == len(lines)
    assert reasons["late"] > 0


def test_expected_verdicts_follow_the_heartbeats_watermark() -> None:
    """A heartbeat moves the watermark like a reading: a reading sent after one at 00:02
    whose minute ended at 00:01 is late (00:01 + 30 s <= 00:02), even as the site's first;
    the same reading sent before it is not; the heartbeats are counted apart."""
    ts = np.array([START + 10.0, START + 30.0, START + 100.0, START + 150.0])
    batch = Batch("traffic.readings", "S", {"ts": ts, "lane": np.ones(4, dtype=np.int64),
                                            "speed_kph": np.full(4, 50.0)})
    plan = plan_messages(4, 0, FaultRates(), np.random.default_rng(0), [])
    # sent: hb 00:02, row 0, row 1, hb 00:03, row 2, row 3: rows 0-2 late (their minutes
    # close at 00:01:30 and 00:02:30), row 3's minute [00:02, 00:03) closes at 00:03:30
    beats = (np.array([START + 120.0, START + 180.0]), np.array([0, 2], dtype=np.intp))
    exp = expect_site(batch, plan, START + 200.0, lateness_s=30.0, max_skew_s=300.0,
                      beats=beats)
    assert (exp.readings, exp.heartbeats, exp.watermark) == (4, 2, START + 180.0)
    assert exp.deadletter == Counter(late=3)
    order = [hb("S", START + 120.0), 0, 1, hb("S", START + 180.0), 2, 3]
    lines = [line("traffic.readings", "S", o if isinstance(o, dict) else
                  {"site_id": "S", "ts": float(ts[o]), "lane": 1, "speed_kph": 50.0})
             for o in order]
    assert beat_verdicts(lines, START + 200.0) == (4, Counter(late=3), Counter(heartbeats=2))
    # both heartbeats after rows 0 and 1: only row 2 is late
    exp = expect_site(batch, plan, START + 200.0, lateness_s=30.0, max_skew_s=300.0,
                      beats=(beats[0], np.array([2, 2], dtype=np.intp)))
    assert exp.deadletter == Counter(late=1)
    assert expect_site(batch, plan, START + 200.0, lateness_s=30.0,
                       max_skew_s=300.0).deadletter == Counter()


def test_no_heartbeat_while_a_sensor_is_off_the_air() -> None:
    """A dropout gap loses the readings in it and the heartbeats too: with samples and
    heartbeats both every minute, a heartbeat is there exactly when its minute's sample
    is."""
    opts = FeedOptions(start=START + 6 * H, duration_s=6 * H, seed=4, heartbeat_s=60.0,
                       faults=FaultRates(dropout=0.3), sites=("AQ-LAKESIDE",))
    lines = [json.loads(x) for x in build_feed(load_registry(), opts)[0]]
    samples = {t for line in lines for t in rows_of(line)}
    beats = set(beats_by_site(lines)["AQ-LAKESIDE"])
    inside = {START + 6 * H + MIN * k for k in range(1, 360)}  # both kinds can be there
    assert beats & inside == samples & inside
    assert 0 < len(inside - beats) < 0.5 * len(inside)  # the gaps cover about 30%


# --- replay: the closing heartbeat ------------------------------------------------------

def line(topic: str, key: str | None, value: dict[str, Any]) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value}


T7 = START + 7 * H  # 07:00
NOW = START + 30 * 24 * H  # a month later: nothing of the feed is in the future
FEED = [
    line("traffic.readings", "T1", {"site_id": "T1", "ts": T7 + 605.0, "lane": 1,
                                    "speed_kph": 50.0}),
    line("air.readings", "AQ1", {"site_id": "AQ1", "ts": T7 + 600.0, "no2_ugm3": 20.0}),
    line("traffic.readings", "T1", {"site_id": "T1", "ts": T7 + 899.999, "lane": 1,
                                    "speed_kph": 50.0}),
    # wrong key; exactly on a boundary: in [07:20, 07:30)... and the 15 min [07:15, 07:30)
    line("traffic.readings", "T1", {"site_id": "T2", "ts": T7 + 1200.0, "lane": 1,
                                    "speed_kph": 50.0}),
    line("traffic.readings", "T3", {"site_id": "T3", "columns": {
        "ts": [T7 + 2640.0, T7 + 2760.0], "lane": [1, 2], "speed_kph": [40.0, 41.0]}}),
    {"topic": "traffic.readings", "key": "T3", "value_b64": "//4="},
]


def sent_lines(sink: RecordingSink) -> list[dict[str, Any]]:
    return [{"topic": t, "key": k, "value": orjson.loads(v)} for t, k, v in sink.sent
            if v != b"\xff\xfe"]


def closing_of(sink: RecordingSink, n_feed: int) -> list[tuple[str, str | None, Any]]:
    return [(t, k, orjson.loads(v)) for t, k, v in sink.sent[n_feed:]]


def hb(site: str, ts: float) -> dict[str, Any]:
    return {"site_id": site, "ts": ts, "heartbeat": True}


def test_replay_ends_each_site_with_one_heartbeat_past_its_last_window() -> None:
    sink = RecordingSink()
    stats = replay(FEED, sink, closing=Closing(30.0, 300.0), now=lambda: NOW)
    assert closing_of(sink, len(FEED)) == [
        ("air.readings", "AQ1", hb("AQ1", T7 + H + 30.0)),  # 07:10 -> 08:00 + 30 s
        ("traffic.readings", "T1", hb("T1", T7 + 900.0 + 30.0)),  # 07:14:59.999 -> 07:15:30
        ("traffic.readings", "T2", hb("T2", T7 + 1800.0 + 30.0)),  # 07:20 -> 07:30:30
        ("traffic.readings", "T3", hb("T3", T7 + H + 30.0)),  # 07:46 -> 08:00:30
    ]
    assert (stats.messages, stats.readings, stats.heartbeats, stats.closing, stats.held) == (
        10, 7, 4, 4, 0)
    assert stats.topics == {"traffic.readings": 8, "air.readings": 2}


def test_closing_heartbeat_lateness_is_an_option() -> None:
    sink = RecordingSink()
    replay(FEED[:1], sink, closing=Closing(45.0, 300.0), now=lambda: NOW)
    assert closing_of(sink, 1) == [("traffic.readings", "T1", hb("T1", T7 + 900.0 + 45.0))]
    with pytest.raises(UsageError):
        Closing(-1.0)


def test_closing_heartbeat_is_never_stamped_ahead_of_the_clock() -> None:
    """Replayed at 07:20 (as with --rebase-now): AQ1's hour and T2's quarter have not ended
    yet. AQ1's heartbeat is held at now; T2's would be no later than its last reading, so
    it is left out; T3's readings are 24-26 min ahead, `future`, and not waited for."""
    sink = RecordingSink()
    stats = replay(FEED, sink, closing=Closing(30.0, 300.0), now=lambda: T7 + 1200.0)
    assert closing_of(sink, len(FEED)) == [
        ("air.readings", "AQ1", hb("AQ1", T7 + 1200.0)),
        ("traffic.readings", "T1", hb("T1", T7 + 930.0)),
    ]
    assert (stats.heartbeats, stats.closing, stats.held) == (2, 2, 1)
    # A reading up to MAX_CLOCK_SKEW_S ahead is accepted by the processor, so it counts.
    ahead = [line("traffic.readings", "T4", {"site_id": "T4", "ts": T7 + 1200.0 + 299.0,
                                             "lane": 1, "speed_kph": 5.0})]
    sink = RecordingSink()
    replay(ahead, sink, closing=Closing(30.0, 300.0), now=lambda: T7 + 1200.0)
    assert closing_of(sink, 1) == []  # held at now, which is behind that reading


def test_rebased_replay_closes_on_the_shifted_times() -> None:
    sink = RecordingSink()
    offset = 24 * H
    replay(FEED[:2], sink, offset=offset, closing=Closing(30.0, 300.0), now=lambda: NOW)
    assert closing_of(sink, 2) == [
        ("air.readings", "AQ1", hb("AQ1", T7 + offset + H + 30.0)),
        ("traffic.readings", "T1", hb("T1", T7 + offset + 930.0)),
    ]


def test_heartbeats_in_the_file_count_apart_and_a_stopped_replay_sends_no_closing_one() -> None:
    feed = [*FEED[:1], line("traffic.readings", "T1", hb("T1", T7 + 960.0))]
    sink = RecordingSink()
    stats = replay(feed, sink, closing=Closing(30.0, 300.0), now=lambda: NOW)
    assert closing_of(sink, 2) == []  # the file's own heartbeat already closes everything
    assert (stats.messages, stats.readings, stats.heartbeats, stats.closing) == (2, 1, 1, 0)
    sink = RecordingSink()
    stats = replay(FEED, sink, closing=Closing(), now=lambda: NOW,
                   stop=lambda: len(sink.sent) >= 3)
    assert len(sink.sent) == 3 and stats.closing == 0
    sink = RecordingSink()
    stats = replay(FEED, sink, closing=None, now=lambda: NOW)
    assert len(sink.sent) == len(FEED) and stats.heartbeats == 0


def test_a_replayed_generated_feed_closes_every_window(tmp_path: Path) -> None:
    feed = tmp_path / "f.jsonl"
    opts = FeedOptions(start=T7, duration_s=1200.0, seed=1, heartbeat_s=60.0,
                       sites=("A128-*", "AQ-GRAYS-LONDON-RD"))
    write_feed(feed, load_registry(), opts)
    lines = read_lines(feed)
    sink = RecordingSink()
    stats = replay(lines, sink, closing=Closing(), now=lambda: NOW)
    assert closing_of(sink, len(lines)) == [
        ("air.readings", "AQ-GRAYS-LONDON-RD", hb("AQ-GRAYS-LONDON-RD", T7 + H + 30.0)),
        ("traffic.readings", "A128-ORSETT-NB", hb("A128-ORSETT-NB", T7 + 1800.0 + 30.0)),
        ("traffic.readings", "A128-ORSETT-SB", hb("A128-ORSETT-SB", T7 + 1800.0 + 30.0)),
    ]
    out = sent_lines(sink)
    records, reasons, beats = beat_verdicts(out, clock=NOW)
    assert (records, reasons) == (stats.readings, Counter())
    assert beats == Counter(heartbeats=stats.heartbeats) == Counter(heartbeats=3 * 20 + 3)
    assert check_claims(out) == stats.heartbeats


# --- the console script -------------------------------------------------------------------

def test_cli_heartbeat_options() -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).heartbeat_s == 60.0
    assert parser.parse_args(["run", "--no-heartbeats"]).heartbeat_s == 0.0
    assert parser.parse_args(["run", "--heartbeat-s", "30"]).heartbeat_s == 30.0
    assert parser.parse_args(["generate", "--out", "x"]).heartbeat_s == 0.0
    rep = parser.parse_args(["replay", "f.jsonl"])
    assert (rep.no_heartbeats, rep.lateness) == (False, None)
    assert parser.parse_args(["replay", "f.jsonl", "--no-heartbeats"]).no_heartbeats


@pytest.mark.parametrize("args", [["run", "--heartbeat-s", "-1"],
                                  ["replay", "f.jsonl", "--lateness", "soon"]])
def test_cli_bad_heartbeat_options_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(args)
    assert done.value.code == 2


def test_cli_generate_rejects_a_sub_second_interval(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["generate", "--duration", "5m", "--heartbeat-s", "0.5",
              "--out", str(tmp_path / "x.jsonl")])
    assert done.value.code == 2
    assert "--heartbeat-s" in capsys.readouterr().err


def test_cli_generate_and_replay_report_heartbeats_apart(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOWED_LATENESS_S", raising=False)
    feed = tmp_path / "f.jsonl"
    assert main(["generate", "--start", "2024-06-03T07:00:00Z", "--duration", "10m",
                 "--sites", "A128-ORSETT-NB", "--heartbeat-s", "60", "--out", str(feed)]) == 0
    lines = read_lines(feed)
    doc = json.loads(feed.with_name(feed.name + ".summary.json").read_text())
    readings = sum(len(rows_of(x)) for x in lines)
    assert (doc["heartbeats"], doc["readings"], doc["messages"]) == (10, readings, readings + 10)
    assert "heartbeats             10" in capsys.readouterr().err
    copy = tmp_path / "copy.jsonl"
    assert main(["replay", str(feed), "--out", str(copy), "--lateness", "40"]) == 0
    report = capsys.readouterr().err
    assert "10 from the file, 1 closing (last window end + 40 s)" in report
    assert f"readings               {readings}" in report
    got = read_lines(copy)
    assert got[:-1] == lines
    assert got[-1] == line("traffic.readings", "A128-ORSETT-NB", hb("A128-ORSETT-NB",
                                                                    T7 + 900.0 + 40.0))


def test_windows_of_the_closing_heartbeat_are_the_processors() -> None:
    processor = {"traffic.readings": float(max(WINDOW_TAGS)),
                 "air.readings": float(max(PERIOD_TAGS))}
    assert processor == LAST_WINDOW_S
    assert all(max(WINDOW_TAGS) % w == 0 for w in WINDOW_TAGS)
    assert all(max(PERIOD_TAGS) % w == 0 for w in PERIOD_TAGS)
