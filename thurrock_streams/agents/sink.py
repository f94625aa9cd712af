"""The store sink: aggregates and alerts from Kafka into InfluxDB, losing nothing.

The processor's output topics are the durable buffer. This agent takes whole fetched
batches of their records from its lane, writes them as points, and the lane marks their
offsets committable only after the store took them. While the store is down the batch is
retried with backoff; the lane stops fetching the sink's partitions once its queue is
full, and the readings agents carry on. A point the store refuses as malformed is
dead-lettered (reason ``sink``) instead of blocking the stream.
"""

from __future__ import annotations

import base64
import collections
import time
from typing import Any

import faust
import orjson

from ..adapters.influx import InfluxWriter, to_line
from ..errors import SinkError
from ..settings import Settings
from ..topics import AIR_AGGREGATES, ALERTS, DEADLETTER, TRAFFIC_AGGREGATES
from .lane import Lane
from .readings import CLOSED_AT

__all__ = ["SinkAgent"]


def _schema(topic: str, rec: dict[str, Any], settings: Settings) -> str:
    if topic == settings.topic(TRAFFIC_AGGREGATES):
        return "traffic"
    if topic == settings.topic(ALERTS):
        return "alerts"
    return str(rec.get("measurement", "air_quality"))


class SinkAgent:
    """Writes every record of the processor's output topics to the store."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.writer = InfluxWriter(settings)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        n = settings.topic_partitions
        self.sources = app.topic(*(settings.topic(t) for t in (TRAFFIC_AGGREGATES, AIR_AGGREGATES,
                                                               ALERTS)),
                                 partitions=n, internal=True, **raw)
        self.deadletter_out = app.topic(settings.topic(DEADLETTER), partitions=n, internal=True,
                                        **raw)
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self.lane = Lane(app, "sink", self.sources.topics,
                         max_messages=4 * settings.sink_batch_size)
        app.agent(self.sources, name="store-sink")(self._run)

    async def _run(self, stream: Any) -> None:
        # What is fetched is written at once (no waiting to fill a batch): a window closed
        # reaches the store one fetch after it was sent. The lane finishes a write even
        # when the agent is cancelled (a worker stopping during a store outage).
        async for take in self.lane.takes(self.settings.sink_batch_size):
            await self.lane.run(take, self.write_messages)

    async def write_messages(self, messages: list[Any]) -> None:
        """Write the points of a batch of messages; return once all are in the store."""
        lines: list[str] = []
        sources: list[Any] = []
        bad: list[tuple[Any, str]] = []
        for m in messages:
            try:
                rec = orjson.loads(m.value)
                lines.append(to_line(_schema(m.topic, rec, self.settings), rec))
                sources.append(m)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, SinkError) as exc:
                bad.append((m, f"cannot convert to a point: {exc!r}"[:500]))
        refused = await self.writer.write(lines)
        bad.extend((sources[i], "the store refused the point as malformed") for i in refused)
        now = time.time()
        for m in sources:
            closed = dict(m.headers or []).get(CLOSED_AT)
            if closed:
                self.latency_ms.append((now - float(closed)) * 1000.0)
        for m, detail in bad:
            rec = {"reason": "sink", "detail": detail, "topic": m.topic,
                   "partition": m.partition, "offset": m.offset, "row": None,
                   "value_b64": base64.b64encode(m.value or b"").decode("ascii")}
            fut = await self.deadletter_out.send(key=m.key, value=orjson.dumps(rec))
            await fut
