"""The store sink: aggregates and alerts from Kafka into InfluxDB, losing nothing.

The processor's output topics are the durable buffer. This agent takes whole fetched
batches of their records from its lane, writes them as points, and the lane marks their
offsets committable only after the store took them. While the store is down the batch is
retried with backoff; the lane stops fetching the sink's partitions once its queue is
full, and the readings agents carry on. A point the store refuses as malformed is
dead-lettered (reason ``sink``) instead of blocking the stream: the batch's dead letters
go to Kafka together and are retried until Kafka holds them, before the batch's offsets
become committable.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson

from ..adapters.influx import InfluxWriter, to_line
from ..engine.processor import dead_letter
from ..errors import SinkError
from ..settings import Settings
from ..topics import AIR_AGGREGATES, ALERTS, DEADLETTER, TRAFFIC_AGGREGATES
from .lane import Lane
from .produce import send_records
from .readings import CLOSED_AT, retry_kafka

__all__ = ["SinkAgent"]


class SinkAgent:
    """Writes every record of the processor's output topics to the store."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.writer = InfluxWriter(settings)
        # The schema of each topic's records; an air aggregate names its own measurement.
        self.schemas: dict[str, str | None] = {settings.topic(TRAFFIC_AGGREGATES): "traffic",
                                               settings.topic(ALERTS): "alerts",
                                               settings.topic(AIR_AGGREGATES): None}
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        n = settings.topic_partitions
        self.sources = app.topic(*(settings.topic(t) for t in (TRAFFIC_AGGREGATES, AIR_AGGREGATES,
                                                               ALERTS)),
                                 partitions=n, internal=True, **raw)
        self.deadletter_out = app.topic(settings.topic(DEADLETTER), partitions=n, internal=True,
                                        **raw)
        #: Sends (key, value) dead-letter records in one produce, returning once Kafka
        #: holds them all.
        self.send_dead: Callable[[list[tuple[bytes | None, bytes]]], Awaitable[None]] = \
            lambda records: send_records(app, self.deadletter_out.get_topic_name(), records)
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self.lane = Lane(app, "sink", self.sources.topics,
                         max_messages=4 * settings.sink_batch_size)
        app.agent(self.sources, name="store-sink")(self._run)

    async def _run(self, stream: Any) -> None:
        # What is fetched is written at once (no waiting to fill a batch): a window closed
        # reaches the store one fetch after it was sent. The lane finishes a write even
        # when the agent is cancelled (a worker stopping during a store outage).
        self.writer.open()
        async for take in self.lane.takes(self.settings.sink_batch_size):
            await self.lane.run(take, self.write_messages)

    def convert(self, messages: list[Any]) -> tuple[list[str], list[Any], list[float],
                                                   list[tuple[Any, str]]]:
        """The points of a batch: (lines, the message of each line, the window-close
        stamps of the lines' messages (epoch s), the messages that are no point and why)."""
        lines: list[str] = []
        sources: list[Any] = []
        closed: list[float] = []
        bad: list[tuple[Any, str]] = []
        schemas = self.schemas
        loads, line_of = orjson.loads, to_line
        for m in messages:
            try:
                rec = loads(m.value)
                schema = schemas.get(m.topic) or str(rec.get("measurement", "air_quality"))
                lines.append(line_of(schema, rec))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
                    SinkError) as exc:
                bad.append((m, f"cannot convert to a point: {exc!r}"[:500]))
                continue
            sources.append(m)
            headers = m.headers
            if headers:
                # The readings agents stamp one header; any other set is read as a dict
                # (the last of a repeated name wins).
                stamp = (headers[0][1] if len(headers) == 1 and headers[0][0] == CLOSED_AT
                         else dict(headers).get(CLOSED_AT))
                if stamp:
                    try:
                        closed.append(float(stamp))
                    except ValueError:
                        continue  # a stamp that is no number: no latency to note
        return lines, sources, closed, bad

    async def write_messages(self, messages: list[Any]) -> None:
        """Write the points of a batch of messages; return once all are in the store."""
        lines, sources, closed, bad = self.convert(messages)
        refused = await self.writer.write(lines)
        bad.extend((sources[i], "the store refused the point as malformed") for i in refused)
        if closed:
            now_ms = time.time() * 1000.0
            self.latency_ms.extend(now_ms - c * 1000.0 for c in closed)
        if bad:
            # the readings' record (a value too large for Kafka is cut, as theirs are: this
            # is retried until Kafka takes it)
            records = [(m.key, orjson.dumps(dead_letter(m, "sink", detail, None)))
                       for m, detail in bad]
            await retry_kafka(lambda: self.send_dead(records), "sink: dead letters")
