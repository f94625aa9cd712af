"""The dashboard's Kafka adapter: reads the aggregates and alerts topics with no consumer
group (it assigns every partition itself and commits nothing), folds each record into the
:class:`~.state.DashboardState` and hands it on to the live stream.

At start it reads back by record timestamp: ``traffic.aggregates`` from 25 hours ago (24 h
of event time plus an hour's margin), ``air.aggregates`` from 1 January (UTC) or 25 hours
ago, whichever is earlier (the legal-limit counts are per calendar year), and ``alerts`` from
the beginning (an alert raised last week may still be open). When the broker goes away it
keeps serving what it has, reconnects with a growing pause, and resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from ..settings import Settings
from ..topics import AIR_AGGREGATES, ALERTS, TRAFFIC_AGGREGATES
from .state import DashboardState

__all__ = ["Feed", "kafka_options"]

log = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], None]
READ_BACK_S = 25 * 3600.0
#: How often the broker is asked for end offsets and partitions while reading, s.
CHECK_EVERY_S = 5.0


def kafka_options(s: Settings) -> dict[str, Any]:
    """Every option of the dashboard's Kafka client (aiokafka), security included, built
    here alone - the same settings as the worker's clients (app.py ``_client_options``)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": s.kafka_bootstrap_servers.split(","),
        "group_id": None, "enable_auto_commit": False, "auto_offset_reset": "earliest",
        "request_timeout_ms": 15000, "retry_backoff_ms": 500,
        "client_id": "thurrock-streams-dashboard"}
    if s.kafka_security_protocol == "PLAINTEXT":
        return opts
    opts["security_protocol"] = s.kafka_security_protocol
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    if s.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        opts.update(sasl_mechanism=s.kafka_sasl_mechanism,
                    sasl_plain_username=s.kafka_sasl_username,
                    sasl_plain_password=s.kafka_sasl_password.get())
    return opts


def _start_ms(topic_kind: str, now: float) -> int | None:
    """Record timestamp (ms) to read back from; None for the beginning."""
    if topic_kind == "alerts":
        return None
    start = now - READ_BACK_S
    if topic_kind == "air":
        jan1 = dt.datetime(dt.datetime.fromtimestamp(now, dt.UTC).year, 1, 1, tzinfo=dt.UTC)
        start = min(start, jan1.timestamp())
    return int(start * 1000)


class Feed:
    """Consumes the three topics into ``state``; ``caught_up`` once the first read-back
    reached the end offsets seen at start."""

    def __init__(self, settings: Settings, state: DashboardState) -> None:
        self.settings = settings
        self.state = state
        self.topics = {settings.topic(TRAFFIC_AGGREGATES): "traffic",
                       settings.topic(AIR_AGGREGATES): "air", settings.topic(ALERTS): "alerts"}
        self.listeners: list[Listener] = []
        self.caught_up = False
        self.connected = False
        self.bad_records = 0
        self._positions: dict[Any, int] = {}
        self._last_ms: dict[Any, int] = {}
        self._targets: dict[Any, int] | None = None

    async def run(self) -> None:
        """Consume until cancelled; reconnect after any Kafka error."""
        pause = 0.5
        while True:
            try:
                await self._session()
                pause = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                log.warning("dashboard: Kafka unavailable (%s: %s); serving what it holds, "
                            "retrying in %.1f s", type(exc).__name__, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _session(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**kafka_options(self.settings))
        try:
            await consumer.start()
            self.connected = True
            tps = await self._assign(consumer, TopicPartition)
            last_check = time.monotonic()
            while True:
                batches = await consumer.getmany(timeout_ms=300, max_records=2000)
                for tp, records in batches.items():
                    for r in records:
                        self._fold(tp.topic, r.value, r.timestamp)
                        self._positions[tp] = r.offset + 1
                        self._last_ms[tp] = r.timestamp
                await self._check_caught_up(consumer, tps)
                if time.monotonic() - last_check > CHECK_EVERY_S:
                    last_check = time.monotonic()
                    self.state.prune()
                    # Ask the broker: an error here (it went away) starts a new session;
                    # so does a new topic or partition.
                    await asyncio.wait_for(consumer.end_offsets(tps), CHECK_EVERY_S)
                    if await self._partitions_changed(consumer, tps, TopicPartition):
                        return
        finally:
            self.connected = False
            await consumer.stop()

    async def _assign(self, consumer: Any, tp_cls: Any) -> list[Any]:
        tps = await self._wanted(consumer, tp_cls)
        consumer.assign(tps)
        now = time.time()
        ends = await consumer.end_offsets(tps)
        by_time: dict[Any, int] = {}
        for tp in tps:
            if tp in self._positions and self._positions[tp] > ends[tp]:
                # Behind what was read: a broker that restarted with a new log (or one
                # whose end offset lags a little, as Tansu's may): read again from the
                # time of the last record read; what is read twice is folded once.
                del self._positions[tp]
                by_time[tp] = self._last_ms.get(tp, 0)
            elif tp not in self._positions and \
                    (ms := _start_ms(self.topics[tp.topic], now)) is not None:
                by_time[tp] = ms
        offsets = await consumer.offsets_for_times(by_time) if by_time else {}
        for tp in tps:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
            elif tp in by_time:
                found = offsets.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
            else:
                await consumer.seek_to_beginning(tp)
        if self._targets is None:
            self._targets = dict(ends)
        log.info("dashboard: reading %d partitions of %s", len(tps), ", ".join(self.topics))
        return tps

    async def _wanted(self, consumer: Any, tp_cls: Any) -> list[Any]:
        """Every partition of the three topics (waiting until at least one exists)."""
        while True:
            await consumer._client.force_metadata_update()
            tps = [tp_cls(t, p) for t in self.topics
                   for p in sorted(consumer.partitions_for_topic(t) or ())]
            if tps:
                return tps
            if self._targets is None:
                self._targets = {}  # nothing to catch up with yet
                self.caught_up = True
            await asyncio.sleep(2.0)

    async def _partitions_changed(self, consumer: Any, tps: list[Any], tp_cls: Any) -> bool:
        await consumer._client.force_metadata_update()
        now = {tp_cls(t, p) for t in self.topics for p in consumer.partitions_for_topic(t) or ()}
        return now != set(tps)

    async def _check_caught_up(self, consumer: Any, tps: list[Any]) -> None:
        if self.caught_up or self._targets is None:
            return
        for tp, end in self._targets.items():
            if tp in tps and await consumer.position(tp) < end:
                return
        self.caught_up = True
        log.info("dashboard: caught up with the topics")

    def _fold(self, topic: str, raw: bytes | None, ts_ms: int | None) -> None:
        kind = self.topics.get(topic)
        try:
            rec = json.loads(raw) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            rec = None
        if not isinstance(rec, dict) or kind is None:
            self.bad_records += 1
            return
        arrived = ts_ms / 1000.0 if ts_ms and ts_ms > 0 else time.time()
        ok = (self.state.add_alert(rec) if kind == "alerts"
              else self.state.add_aggregate(kind, rec, arrived))  # type: ignore[arg-type]
        if not ok:
            self.bad_records += 1
            return
        for listener in list(self.listeners):
            listener(kind, rec)
