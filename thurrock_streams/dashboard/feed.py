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
#: Longest pause between two attempts to reach the broker, s.
MAX_PAUSE_S = 5.0
#: Longest wait for any one call to the broker, s.
CALL_TIMEOUT_S = 15.0


def kafka_options(s: Settings) -> dict[str, Any]:
    """Every option of the dashboard's Kafka client (aiokafka): its own reading options
    here, the security ones from the project's one builder (adapters/kafka.py)."""
    from ..adapters.kafka import aiokafka_options

    return {"bootstrap_servers": s.kafka_bootstrap_servers.split(","),
            "group_id": None, "enable_auto_commit": False, "auto_offset_reset": "earliest",
            "request_timeout_ms": 15000, "retry_backoff_ms": 500,
            "client_id": "thurrock-streams-dashboard", **aiokafka_options(s)}


def _cancelling() -> bool:
    """Is the current task itself being cancelled (not just an awaited inner one)?"""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


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
        self._last_ms: dict[Any, int] = {}
        self._in_outage = False
        self._targets: dict[Any, int] | None = None

    async def run(self) -> None:
        """Consume until cancelled; reconnect after any Kafka error."""
        pause = 0.5
        while True:
            try:
                await self._session()
                pause = 0.5
            except asyncio.CancelledError as exc:
                if _cancelling():
                    raise
                # aiokafka lets its own inner cancellations out when the broker goes away
                self._outage(repr(exc), pause)
            except Exception as exc:
                self._outage(f"{type(exc).__name__}: {exc}", pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)

    def _outage(self, what: str, pause: float) -> None:
        """One warning when the broker goes away; the retries after it at debug level."""
        self.connected = False
        if not self._in_outage:
            log.warning("dashboard: Kafka unavailable (%s); serving what it holds and "
                        "reconnecting every %g s at most", what, MAX_PAUSE_S)
        else:
            log.debug("dashboard: still no Kafka (%s); next try in %.1f s", what, pause)
        self._in_outage = True

    async def _session(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**kafka_options(self.settings))
        try:
            await asyncio.wait_for(consumer.start(), CALL_TIMEOUT_S)
            self.connected = True
            if self._in_outage:
                log.info("dashboard: Kafka is back; reading on from where it stopped")
                self._in_outage = False
            tps = await self._assign(consumer, TopicPartition)
            last_check = time.monotonic()
            while True:
                # aiokafka's getmany can hang past its timeout while the broker is down:
                # a wait that long means the broker is gone; a new session reconnects
                # and resumes from the positions read (nothing fetched is lost).
                batches = await asyncio.wait_for(
                    consumer.getmany(timeout_ms=300, max_records=2000), CHECK_EVERY_S)
                for tp, records in batches.items():
                    for r in records:
                        self._fold(tp.topic, r.value, r.timestamp)
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
            try:
                await asyncio.wait_for(consumer.stop(), CALL_TIMEOUT_S)
            except (Exception, asyncio.CancelledError) as exc:
                # a broker gone away may not say goodbye: aiokafka's close can end in a
                # cancellation of its own fetch task, which must not end ours
                if isinstance(exc, asyncio.CancelledError) and _cancelling():
                    raise
                log.debug("dashboard: closing the consumer: %r", exc)

    async def _assign(self, consumer: Any, tp_cls: Any) -> list[Any]:
        tps = await self._wanted(consumer, tp_cls)
        consumer.assign(tps)
        now = time.time()
        ends = await asyncio.wait_for(consumer.end_offsets(tps), CALL_TIMEOUT_S)
        # Every session seeks by record time, never by a remembered offset: a broker that
        # restarted with a new log (a memory-backed one) may hold new records at offsets
        # already read. Going on from the time of the last record read re-reads a few
        # records, which the state folds once.
        by_time: dict[Any, int] = {}
        for tp in tps:
            ms = self._last_ms.get(tp)
            if ms is None:
                ms = _start_ms(self.topics[tp.topic], now)
            if ms is not None:
                by_time[tp] = ms
        offsets = await asyncio.wait_for(consumer.offsets_for_times(by_time),
                                         CALL_TIMEOUT_S) if by_time else {}
        for tp in tps:
            if tp in by_time:
                found = offsets.get(tp)
                # No record at or after that time: None from Kafka, a timestamp of -1
                # from Tansu (with an offset that means nothing).
                at = found.offset if found is not None and found.timestamp >= 0 else ends[tp]
                consumer.seek(tp, at)
            else:
                await consumer.seek_to_beginning(tp)
        if self._targets is None:
            self._targets = dict(ends)
        log.info("dashboard: reading %d partitions of %s", len(tps), ", ".join(self.topics))
        return tps

    async def _wanted(self, consumer: Any, tp_cls: Any) -> list[Any]:
        """Every partition of the three topics (waiting until at least one exists)."""
        while True:
            await asyncio.wait_for(consumer._client.force_metadata_update(), CALL_TIMEOUT_S)
            tps = [tp_cls(t, p) for t in self.topics
                   for p in sorted(consumer.partitions_for_topic(t) or ())]
            if tps:
                return tps
            if self._targets is None:
                self._targets = {}  # nothing to catch up with yet
                self.caught_up = True
            await asyncio.sleep(2.0)

    async def _partitions_changed(self, consumer: Any, tps: list[Any], tp_cls: Any) -> bool:
        ok = await asyncio.wait_for(consumer._client.force_metadata_update(), CALL_TIMEOUT_S)
        if not ok:
            raise ConnectionError("no metadata from the broker")
        now = {tp_cls(t, p) for t in self.topics for p in consumer.partitions_for_topic(t) or ()}
        if now != set(tps):
            log.info("dashboard: the topics' partitions changed; assigning them again")
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
