"""Replay without a broker: rebasing, pacing (fake clock), what reaches the sink."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors_sim import FaultRates, FeedOptions, write_feed
from sensors_sim.errors import InputFormatError
from sensors_sim.publish import FileSink, message_from_line
from sensors_sim.replay import Pacer, file_anchor, read_jsonl, replay, shift_value
from thurrock_streams.registry import load_registry

START = 1_717_372_800.0


class RecordingSink:
    """A sink that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, bytes]] = []
        self.closed = False

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def close(self) -> None:
        self.closed = True


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.slept = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s > 0
        self.t += s
        self.slept += s


def _ts(message: tuple[str, str | None, bytes]) -> float | None:
    try:
        ts = orjson.loads(message[2]).get("ts")
    except orjson.JSONDecodeError:
        return None
    return ts if isinstance(ts, float) else None


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "f.jsonl"
    opts = FeedOptions(start=START + 7 * 3600, duration_s=1200.0, seed=4,
                       faults=FaultRates(malformed=0.05, skew=0.02, skew_direction="ahead"),
                       sites=("A126-*", "AQ-GRAYS-*"))
    write_feed(path, load_registry(), opts)
    return path


def test_shift_value_single_frame_and_iso() -> None:
    assert shift_value({"site_id": "S", "ts": 10.0}, 0.5) == {"site_id": "S", "ts": 10.5}
    frame = {"site_id": "S", "columns": {"ts": [1.0, 2.0], "lane": [1, 2]}}
    assert shift_value(frame, 100.0) == {"site_id": "S",
                                         "columns": {"ts": [101.0, 102.0], "lane": [1, 2]}}
    iso = shift_value({"site_id": "S", "ts": "2024-06-03T01:00:00+01:00"}, 60.0)
    assert iso["ts"] == START + 60.0
    assert shift_value({"site_id": "S", "ts": "soon"}, 5.0)["ts"] == "soon"
    assert shift_value([1, 2], 5.0) == [1, 2]


@settings(max_examples=50, deadline=None)
@given(ts=st.floats(1e9, 2e9), offset=st.floats(-1e8, 1e8))
def test_shift_keeps_millisecond_precision(ts: float, offset: float) -> None:
    t = round(ts, 3)
    shifted = shift_value({"ts": t}, round(offset, 3))["ts"]
    assert abs(shifted - (t + round(offset, 3))) <= 0.0005 + 1e-6
    assert round(shifted, 3) == shifted


def test_anchor_comes_from_the_summary_else_the_latest_time(feed: Path, tmp_path: Path) -> None:
    assert file_anchor(feed, read_jsonl(feed)) == START + 7 * 3600 + 1200.0
    bare = tmp_path / "bare.jsonl"
    bare.write_bytes(b'{"topic":"air.readings","key":"S","value":{"site_id":"S","ts":5.0}}\n'
                     b'{"topic":"air.readings","key":"S","value":{"site_id":"S","columns":'
                     b'{"ts":[7.5,6.0]}}}\n')
    assert file_anchor(bare, read_jsonl(bare)) == 7.5
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(InputFormatError):
        file_anchor(empty, read_jsonl(empty))


def test_rebase_moves_the_end_to_now_and_keeps_spacing(feed: Path) -> None:
    now = 1_900_000_000.0
    offset = round(now - file_anchor(feed, read_jsonl(feed)), 3)
    sink = RecordingSink()
    replay(read_jsonl(feed), sink, offset=offset)
    before = [json.loads(ln) for ln in feed.read_bytes().splitlines()]
    assert len(sink.sent) == len(before)
    normal = []
    for line, (topic, key, value) in zip(before, sink.sent, strict=True):
        assert (topic, key) == (line["topic"], line["key"])
        if "value_b64" in line:
            assert value == base64.b64decode(line["value_b64"])  # bad bytes go verbatim
            continue
        got = orjson.loads(value)
        if isinstance(got.get("ts"), float):
            assert got["ts"] == pytest.approx(line["value"]["ts"] + offset, abs=1e-3)
            if got["ts"] <= now:
                normal.append(got["ts"])
    assert now - 60 < max(normal) <= now
    # The skewed-ahead readings now lie 10 min - 2 h in the future: the processor's `future`.
    ahead = [t for t in map(_ts, sink.sent) if t is not None and t > now]
    doc = json.loads(feed.with_name(feed.name + ".summary.json").read_text())
    assert len(ahead) == doc["expected_deadletter"]["future"] > 0
    assert all(now + 600 <= t <= now + 7200 for t in ahead)


def test_pacing_follows_event_time_and_ignores_a_clock_far_ahead() -> None:
    lines = [{"topic": "air.readings", "key": "S", "value": {"site_id": "S", "ts": t}}
             for t in (100.0, 110.0, 5000.0, 120.0, 160.0)]
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    replay(lines, RecordingSink(), pacer=pacer, clock=clock)
    assert clock.slept == pytest.approx(6.0)  # (160 - 100) / 10; the 5000 did not stall it
    fast = FakeClock()
    replay(lines, RecordingSink(), pacer=Pacer(None, clock=fast, sleep=fast.sleep), clock=fast)
    assert fast.slept == 0.0


def test_replay_stops_between_messages(feed: Path) -> None:
    sink = RecordingSink()
    stats = replay(read_jsonl(feed), sink, stop=lambda: len(sink.sent) >= 5)
    assert stats.messages == len(sink.sent) == 5


def test_file_sink_round_trip(feed: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.jsonl"
    sink = FileSink(out)
    stats = replay(read_jsonl(feed), sink)
    sink.close()
    assert out.read_bytes() == feed.read_bytes()
    assert stats.messages == len(feed.read_bytes().splitlines())


def test_message_from_line() -> None:
    line: dict[str, Any] = {"topic": "traffic.readings", "key": None,
                            "value_b64": base64.b64encode(b"\xff{").decode()}
    assert message_from_line(line) == ("traffic.readings", None, b"\xff{")


@pytest.mark.parametrize(("text", "line"), [
    (b'{"topic":"t","key":"k","value":{}}\nnot json\n', 2),
    (b'\n{"key":"k","value":{}}\n', 2),
])
def test_bad_lines_are_reported_with_their_number(tmp_path: Path, text: bytes, line: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(text)
    with pytest.raises(InputFormatError) as err:
        list(read_jsonl(path))
    assert err.value.line == line
    with pytest.raises(InputFormatError):
        list(read_jsonl(tmp_path / "missing.jsonl"))
