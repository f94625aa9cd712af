"""The simulator's output against CONTRACT.md §2-3, with a strict, slow reference checker.

``verdicts`` is written from the contract alone (pure Python, one row at a time) and is
shared by the other simulator tests: it says what the processor must do with every
reading of a feed, including the event-time rules (``future`` and ``late``) and heartbeats
(``{"site_id", "ts", "heartbeat": true}``: they raise the site's watermark, count in no
window and are counted apart from the readings).
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sensors_sim import FaultRates, FeedOptions, write_feed
from thurrock_streams.registry import load_registry

START = 1_717_372_800.0  # 2024-06-03T00:00:00Z, a Monday
CLASSES = {"car", "lgv", "hgv", "bus", "motorcycle", "other"}
POLLUTANTS = {"no2_ugm3": 5000.0, "o3_ugm3": 5000.0, "so2_ugm3": 5000.0, "pm25_ugm3": 5000.0,
              "pm10_ugm3": 5000.0, "co_mgm3": 200.0}
SMALLEST_WINDOW = {"traffic.readings": 60.0, "air.readings": 900.0}


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _ts(v: Any) -> float | None:
    if _is_num(v):
        return float(v)
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return None
        return dt.timestamp() if dt.tzinfo else None
    return None


def check_row(topic: str, row: dict[str, Any]) -> str | None:
    """Return the dead-letter reason of one reading, or None when it is valid."""
    site = row.get("site_id")
    if not (isinstance(site, str) and 0 < len(site) <= 64 and site.isprintable()):
        return "schema"
    ts = _ts(row.get("ts"))
    if ts is None:
        return "schema"
    if not math.isfinite(ts):
        return "range"
    if topic == "traffic.readings":
        lane: Any = row.get("lane")
        speed: Any = row.get("speed_kph")
        if not (_is_num(lane) and float(lane).is_integer()) or not _is_num(speed):
            return "schema"
        length: Any = row.get("length_m")
        cls = row.get("class")
        if (length is not None and not _is_num(length)) or (
                cls is not None and cls not in CLASSES):
            return "schema"
        if not 1 <= lane <= 8 or not 0 <= speed <= 250:
            return "range"
        if length is not None and not 0 < length <= 30:
            return "range"
        return None
    present: dict[str, Any] = {k: row.get(k) for k in POLLUTANTS if row.get(k) is not None}
    if not present or any(not _is_num(v) for v in present.values()):
        return "schema"
    if any(not 0 <= v <= POLLUTANTS[k] for k, v in present.items()):
        return "range"
    for name, (lo, hi) in (("temperature_c", (-50, 60)), ("humidity_pct", (0, 100))):
        v: Any = row.get(name)
        if v is not None and (not _is_num(v) or not lo <= v <= hi):
            return "schema" if not _is_num(v) else "range"
    return None


def message_rows(topic: str, raw: bytes) -> tuple[str | None, list[tuple[str | None, Any]]]:
    """Decode one message: (whole-message reason, [(row reason, row)])."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "decode", []
    if not isinstance(value, dict):
        return "schema", []
    cols = value.get("columns")
    if cols is None:
        return None, [(check_row(topic, value), value)]
    if not isinstance(cols, dict) or len({len(v) for v in cols.values()}) != 1:
        return "schema", []
    n = len(cols["ts"])
    rows = [{"site_id": value.get("site_id"), **{k: v[i] for k, v in cols.items()}}
            for i in range(n)]
    return None, [(check_row(topic, r), r) for r in rows]


def raw_value(line: dict[str, Any]) -> bytes:
    """The bytes a JSONL line stands for (as replay sends them)."""
    if "value_b64" in line:
        return base64.b64decode(line["value_b64"])
    return json.dumps(line["value"], separators=(",", ":")).encode()


READING_FIELDS = {"lane", "speed_kph", "length_m", "class", "temperature_c", "humidity_pct",
                  "columns", *POLLUTANTS}


def heartbeat_ts(line: dict[str, Any]) -> float | None:
    """The ``ts`` of a heartbeat line (CONTRACT.md §2: site_id, ts, heartbeat true, no
    reading fields), or None when the line is not a heartbeat."""
    value = line.get("value")
    if not (isinstance(value, dict) and value.get("heartbeat") is True):
        return None
    assert not READING_FIELDS & set(value), value
    assert isinstance(value.get("site_id"), str)
    ts = _ts(value.get("ts"))
    assert ts is not None and math.isfinite(ts), value
    return ts


def verdicts(lines: Iterable[dict[str, Any]], clock: float | Sequence[float],
             lateness: float = 30.0, skew: float = 300.0) -> tuple[int, Counter[str]]:
    """Apply CONTRACT.md §2-3 to a feed in order: (records accounted for, reasons).

    ``clock`` is the processor's clock: one for the whole feed, or one per line.
    """
    records, reasons, _ = beat_verdicts(lines, clock, lateness, skew)
    return records, reasons


def beat_verdicts(lines: Iterable[dict[str, Any]], clock: float | Sequence[float],
                  lateness: float = 30.0, skew: float = 300.0
                  ) -> tuple[int, Counter[str], Counter[str]]:
    """As :func:`verdicts`, and the heartbeats apart: ``heartbeats`` (all of them) and
    ``future`` (those dead-lettered as such)."""
    reasons: Counter[str] = Counter()
    beats: Counter[str] = Counter()
    records = 0
    watermark: dict[str, float] = {}
    lines = list(lines)
    clocks = [float(clock)] * len(lines) if isinstance(clock, int | float) else list(clock)
    for line, now in zip(lines, clocks, strict=True):
        topic = line["topic"]
        hb = heartbeat_ts(line)
        if hb is not None:
            beats["heartbeats"] += 1
            site = line["value"]["site_id"]
            if hb > now + skew:
                beats["future"] += 1
            else:
                watermark[site] = max(watermark.get(site, -math.inf), hb)
            continue
        whole, rows = message_rows(topic, raw_value(line))
        if whole:
            records += 1
            reasons[whole] += 1
            continue
        for reason, row in rows:
            records += 1
            if reason:
                reasons[reason] += 1
                continue
            ts = _ts(row["ts"])
            assert ts is not None
            site = row["site_id"]
            w = SMALLEST_WINDOW[topic]
            if ts > now + skew:
                reasons["future"] += 1
            elif watermark.get(site, -math.inf) >= math.floor(ts / w) * w + w + lateness:
                reasons["late"] += 1
            else:
                watermark[site] = max(watermark.get(site, -math.inf), ts)
    return records, reasons, beats


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL feed."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def clean_feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Three hours of the morning peak at a dozen sites, no faults."""
    path = tmp_path_factory.mktemp("feed") / "clean.jsonl"
    opts = FeedOptions(start=START + 6 * 3600, duration_s=3 * 3600, seed=11,
                       sites=("A13-STIFFORD-*", "A1089-*", "M25-J30-*", "A126-*", "A128-*",
                              "AQ-*"))
    write_feed(path, load_registry(), opts)
    summary = json.loads(path.with_name(path.name + ".summary.json").read_text())
    return path, summary


def test_every_default_message_meets_the_contract(clean_feed: tuple[Path, dict[str, Any]]
                                                  ) -> None:
    path, summary = clean_feed
    lines = read_lines(path)
    for line in lines:
        assert set(line) == {"topic", "key", "value"}
        assert line["topic"] in SMALLEST_WINDOW
        assert line["key"] == line["value"]["site_id"]
        whole, rows = message_rows(line["topic"], raw_value(line))
        assert whole is None
        assert [r for r, _ in rows] == [None]
    records, reasons = verdicts(lines, clock=START + 9 * 3600)
    assert records == summary["readings"] == summary["messages"] == len(lines)
    assert reasons == Counter()
    assert all(v == 0 for v in summary["faults"].values())
    assert all(v == 0 for v in summary["expected_deadletter"].values())


def test_default_feed_fields_and_formats(clean_feed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = clean_feed
    registry = load_registry()
    raw_lines = path.read_bytes().splitlines()
    topics: Counter[str] = Counter()
    for raw in raw_lines:
        line = json.loads(raw)
        value = line["value"]
        topics[line["topic"]] += 1
        assert round(value["ts"], 3) == value["ts"]
        assert START + 6 * 3600 <= value["ts"] < START + 9 * 3600
        if line["topic"] == "traffic.readings":
            assert list(value) == ["site_id", "ts", "lane", "speed_kph", "length_m", "class"]
            assert value["lane"] <= registry.traffic[value["site_id"]].lanes
            assert round(value["speed_kph"], 1) == value["speed_kph"]
            assert round(value["length_m"], 2) == value["length_m"]
        else:
            mon = registry.air[value["site_id"]]
            measured = {k.split("_")[0] for k in value if k.endswith(("_ugm3", "_mgm3"))}
            assert measured == set(mon.pollutants)
            assert list(value)[-2:] == ["temperature_c", "humidity_pct"]
    assert topics["air.readings"] == 7 * 180  # every monitor, every minute
    # Compact JSON with a fixed key order: the bytes are exactly what orjson would write.
    first = json.loads(raw_lines[0])
    assert raw_lines[0] == json.dumps(first, separators=(",", ":")).encode()


def test_lines_are_ordered_by_time_topic_site(clean_feed: tuple[Path, dict[str, Any]]) -> None:
    path, _ = clean_feed
    keys = [(v["value"]["ts"], v["topic"], v["value"]["site_id"]) for v in read_lines(path)]
    assert keys == sorted(keys)


def test_frames_meet_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl"
    opts = FeedOptions(start=START + 8 * 3600, duration_s=1800, seed=5, frames=25,
                       sites=("A13-BAKER-*", "AQ-TILBURY-*"))
    summary = write_feed(path, load_registry(), opts)
    lines = read_lines(path)
    for line in lines:
        cols = line["value"]["columns"]
        assert len({len(v) for v in cols.values()}) == 1
        assert 1 <= len(cols["ts"]) <= 25
    records, reasons = verdicts(lines, clock=START + 9 * 3600)
    assert records == summary.readings
    assert reasons == Counter()


def test_faulty_feed_matches_its_summary(tmp_path: Path) -> None:
    """Every fault at once: the reference checker agrees with the summary, reason by reason."""
    path = tmp_path / "faulty.jsonl"
    rates = FaultRates(dropout=0.05, stuck=0.2, spike=0.01, skew=0.01, duplicate=0.01,
                       out_of_order=0.02, malformed=0.02, wrong_key=0.02)
    opts = FeedOptions(start=START + 7 * 3600, duration_s=2 * 3600, seed=3, faults=rates,
                       sites=("A1014-*", "A126-*", "AQ-CORRINGHAM-*", "AQ-GRAYS-*"))
    summary = write_feed(path, load_registry(), opts)
    doc = json.loads(path.with_name(path.name + ".summary.json").read_text())
    records, reasons = verdicts(read_lines(path), clock=opts.end)
    assert records == doc["readings"]
    assert {k: v for k, v in doc["expected_deadletter"].items() if v} == dict(reasons)
    assert doc["expected_accepted"] == records - sum(reasons.values())
    assert reasons["range"] <= doc["faults"]["spike"]  # a spiked row may sit in bad bytes
    assert doc["faults"]["malformed"] == reasons["decode"] + reasons["schema"]
    assert reasons["late"] <= doc["faults"]["skew"]
    assert all(doc["faults"][k] > 0 for k in doc["faults"]), doc["faults"]
    assert summary.expected_accepted == doc["expected_accepted"]


@pytest.mark.parametrize("frames", [0, 7])
def test_skew_ahead_is_future_once_rebased(tmp_path: Path, frames: int) -> None:
    path = tmp_path / "ahead.jsonl"
    rates = FaultRates(skew=0.02, skew_direction="ahead", malformed=0.01)
    opts = FeedOptions(start=START, duration_s=3600, seed=9, faults=rates, frames=frames,
                       sites=("A13-STANFORD-EB", "AQ-LAKESIDE"))
    write_feed(path, load_registry(), opts)
    doc = json.loads(path.with_name(path.name + ".summary.json").read_text())
    # Replayed with --rebase-now, the processor's clock stands at the end of the data.
    records, reasons = verdicts(read_lines(path), clock=opts.end)
    assert doc["expected_deadletter"]["future"] == reasons["future"] == doc["faults"]["skew"]
    assert reasons["late"] == 0
    assert records == doc["readings"]
    assert {k: v for k, v in doc["expected_deadletter"].items() if v} == dict(reasons)
