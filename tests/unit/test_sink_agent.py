"""The sink agent's batch path (issue #14) with a fake store: the exact lines of one write
per batch, an outage retried until the store takes the batch, bad records dead-lettered,
the close → store latency from the readings agents' header."""

from __future__ import annotations

import asyncio
import base64
import collections
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.errors import KafkaConnectionError

from thurrock_streams.adapters.influx import InfluxWriter
from thurrock_streams.agents.sink import SinkAgent
from thurrock_streams.errors import SinkError
from thurrock_streams.settings import Settings


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any = ()


class DeadLetters:
    """The sink's ``send_dead``: records what Kafka took, failing the first ``fail`` sends."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[bytes | None, dict[str, Any]]] = []
        self.calls: list[int] = []
        self.fail = fail

    async def __call__(self, records: list[tuple[bytes | None, bytes]]) -> None:
        self.calls.append(len(records))
        if len(self.calls) <= self.fail:
            raise KafkaConnectionError("broker unreachable")
        self.sent += [(key, orjson.loads(value)) for key, value in records]


def sink_with(post: Any, clock: Any = None) -> SinkAgent:
    settings = Settings(sink_max_backoff_s=0.01)
    sink = object.__new__(SinkAgent)  # the Faust-free part of the agent
    sink.settings = settings
    sink.writer = InfluxWriter(settings, post=post)
    sink.schemas = {"traffic.aggregates": "traffic", "alerts": "alerts",
                    "air.aggregates": None}
    sink.latency_ms = collections.deque(maxlen=100)
    sink.send_dead = DeadLetters()
    return sink


TRAFFIC = {"site_id": "A13 EB", "window": "1m", "start": 0.0, "ts": 60.0, "count": 2,
           "flow_vph": 120.0, "mean_speed_kph": 50.5}
AIR = {"measurement": "air_quality", "site_id": "TK1", "pollutant": "no2", "period": "1h",
       "start": 0.0, "ts": 3600.0, "capture_pct": 100.0, "valid": True, "mean": 41.0,
       "daqi": 1}
DAQI = {"measurement": "daqi", "site_id": "TK1", "ts": 3600.0, "index": 1, "band": "Low",
        "pollutant": "no2"}
ALERT = {"site_id": "A13 EB", "rule": "congestion", "severity": "moderate",
         "state": "raised", "value": 0.6, "threshold": 0.5, "ts": 300.0,
         "message": "congestion at A13 EB"}


def messages() -> list[Rec]:
    return [
        Rec("traffic.aggregates", 0, 10, b"A13 EB", orjson.dumps(TRAFFIC),
            (("thurrock-closed-at", b"1000.0"),)),
        Rec("air.aggregates", 1, 3, b"TK1", orjson.dumps(AIR)),
        Rec("air.aggregates", 1, 4, b"TK1", orjson.dumps(DAQI),
            (("other", b"x"), ("thurrock-closed-at", b"1000.5"))),
        Rec("alerts", 0, 7, b"A13 EB", orjson.dumps(ALERT)),
        Rec("traffic.aggregates", 0, 11, b"bad", b"{not json"),
        Rec("air.aggregates", 1, 5, b"arr", b"[1, 2]"),  # JSON, but no record
        Rec("traffic.aggregates", 0, 12, b"nofield", orjson.dumps(
            {"site_id": "S", "window": "1m", "ts": 60.0})),
        Rec("air.aggregates", 1, 6, None, None),  # a tombstone
    ]


LINES = [
    "traffic,site_id=A13\\ EB,window=1m count=2i,flow_vph=120,mean_speed_kph=50.5 60000000000",
    "air_quality,period=1h,pollutant=no2,site_id=TK1 capture_pct=100,daqi=1i,mean=41,"
    "valid=true 3600000000000",
    'daqi,site_id=TK1 band="Low",index=1i,pollutant="no2" 3600000000000',
    'alerts,rule=congestion,severity=moderate,site_id=A13\\ EB,state=raised '
    'message="congestion at A13 EB",threshold=0.5,value=0.6 300000000000',
]


def test_one_write_per_batch_with_the_exact_lines_and_bad_records_dead_lettered() -> None:
    posts: list[list[str]] = []

    async def post(lines: list[str]) -> None:
        posts.append(list(lines))

    sink = sink_with(post)
    asyncio.run(sink.write_messages(messages()))
    assert posts == [LINES]
    dead = sink.send_dead.sent  # type: ignore[attr-defined]
    assert [(k, d["topic"], d["partition"], d["offset"], d["reason"]) for k, d in dead] == [
        (b"bad", "traffic.aggregates", 0, 11, "sink"), (b"arr", "air.aggregates", 1, 5, "sink"),
        (b"nofield", "traffic.aggregates", 0, 12, "sink"), (None, "air.aggregates", 1, 6, "sink")]
    assert base64.b64decode(dead[0][1]["value_b64"]) == b"{not json"
    assert "no field" in dead[2][1]["detail"]
    assert len(sink.latency_ms) == 2  # the two stamped records


def test_an_outage_is_retried_and_the_batch_returns_only_once_written() -> None:
    calls: list[int] = []

    async def post(lines: list[str]) -> None:
        calls.append(len(lines))
        if len(calls) <= 3:
            raise SinkError("store unreachable", retryable=True)

    sink = sink_with(post)
    asyncio.run(sink.write_messages(messages()[:4]))
    assert calls == [4, 4, 4, 4]
    assert (sink.writer.stats.retries, sink.writer.stats.written_points) == (3, 4)
    assert sink.send_dead.sent == []  # type: ignore[attr-defined]


def test_points_the_store_refuses_are_dead_lettered_the_rest_written() -> None:
    written: list[str] = []

    async def post(lines: list[str]) -> None:
        if any(line.startswith("daqi") for line in lines):
            raise SinkError("store answered 400", retryable=False, status=400)
        written.extend(lines)

    sink = sink_with(post)
    asyncio.run(sink.write_messages(messages()[:4]))
    assert written == [LINES[0], LINES[1], LINES[3]]
    dead = sink.send_dead.sent  # type: ignore[attr-defined]
    assert [(d["offset"], d["detail"]) for _, d in dead] == [
        (4, "the store refused the point as malformed")]


def test_dead_letters_go_in_one_send_retried_until_kafka_takes_them() -> None:
    async def post(lines: list[str]) -> None:
        pass

    sink = sink_with(post)
    sink.send_dead = dead = DeadLetters(fail=2)
    asyncio.run(sink.write_messages(messages()))
    # the batch's four dead letters together, sent again after each failure, once taken
    assert dead.calls == [4, 4, 4]
    assert [d["offset"] for _, d in dead.sent] == [11, 5, 12, 6]


def test_a_dead_letter_too_large_for_kafka_carries_the_start_of_its_bytes() -> None:
    """As the readings' dead letters (engine.processor.MAX_DEAD_VALUE): a record Kafka
    could never take would be retried for ever."""
    async def post(lines: list[str]) -> None:
        pass

    sink = sink_with(post)
    big = b"{" + b"x" * 700_000
    asyncio.run(sink.write_messages([Rec("traffic.aggregates", 2, 9, b"big", big)]))
    [(key, rec)] = sink.send_dead.sent  # type: ignore[attr-defined]
    assert (key, rec["offset"], rec["reason"]) == (b"big", 9, "sink")
    assert base64.b64decode(rec["value_b64"]) == big[:600_000]
    assert "holds the first 600000 of 700001 bytes" in rec["detail"]
