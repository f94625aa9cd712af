"""Topic names (CONTRACT.md §1) and the payloads the processor writes."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "AIR_AGGREGATES",
    "AIR_READINGS",
    "ALERTS",
    "CONTRACT_TOPICS",
    "DEADLETTER",
    "TRAFFIC_AGGREGATES",
    "TRAFFIC_READINGS",
    "DeadLetter",
    "TrafficAggregate",
]

TRAFFIC_READINGS = "traffic.readings"
AIR_READINGS = "air.readings"
TRAFFIC_AGGREGATES = "traffic.aggregates"
AIR_AGGREGATES = "air.aggregates"
ALERTS = "alerts"
DEADLETTER = "readings.deadletter"
CONTRACT_TOPICS = (TRAFFIC_READINGS, AIR_READINGS, TRAFFIC_AGGREGATES, AIR_AGGREGATES,
                   ALERTS, DEADLETTER)

#: Headers on re-keyed messages: where the reading first arrived.
ORIGIN_TOPIC = "thurrock-origin-topic"
ORIGIN_PARTITION = "thurrock-origin-partition"
ORIGIN_OFFSET = "thurrock-origin-offset"
#: The original message key of a re-keyed message (absent when it had none), so that its
#: dead letter carries the original key (CONTRACT.md §1).
ORIGIN_KEY = "thurrock-origin-key"


class DeadLetter(TypedDict):
    """A value on ``readings.deadletter``; keyed by the original message key."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    row: int | None
    value_b64: str


class TrafficAggregate(TypedDict):
    """A value on ``traffic.aggregates``; keyed by site_id. Absent fields are undefined."""

    site_id: str
    window: Literal["1m", "15m"]
    start: float
    ts: float
    count: int
    flow_vph: float
    mean_speed_kph: NotRequired[float]
    space_mean_speed_kph: NotRequired[float]
    p85_speed_kph: NotRequired[float]
    hgv_pct: NotRequired[float]
    density_vpkm: NotRequired[float]
    congestion_index: NotRequired[float]
