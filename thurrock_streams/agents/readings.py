"""The Faust wiring of a readings pipeline: one agent, one changelog-backed table, a timer.

The agent takes batches of events, hands their bytes to a :class:`Processor` and
delivers what it returns in a crash-safe order: dead letters, re-keyed messages and
aggregates are sent and their delivery awaited; only then are the changed site states
written to the table, and the step waits until the changelog holds them
(:func:`store_states`) before it ends and Faust may commit its offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from faust.types import TP

from ..engine.processor import Pipeline, Processor, SiteState, StepOutput
from ..readings import RawMessage
from ..settings import Settings
from ..topics import ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC
from .delivery import OffsetGuard, Reader, faust_ack, owned_tps, retry, tables_ready

__all__ = ["ReadingsAgent", "partition_for"]

log = logging.getLogger(__name__)

#: Header with the wall-clock time (UTC epoch seconds) at which an aggregate was closed.
CLOSED_AT = "thurrock-closed-at"


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2, as the Java and Python clients)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def finish(step: Awaitable[Any]) -> None:
    """Run a step to its end even if the agent is cancelled meanwhile.

    Faust acks a batch when the agent's loop body ends, even by an exception or a
    cancellation, and may then commit its offsets: so a step must finish (it retries
    delivery and never raises on input) before the body ends.
    """
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def retry_kafka(send: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``send`` until Kafka takes it, backing off up to 30 s between tries."""
    await retry(send, f"{what}: delivery to Kafka", (KafkaError,))


async def store_states(table: Any, records: Mapping[bytes, bytes]) -> None:
    """Put records in a table and return once its changelog holds them (acks=all).

    Faust commits source offsets without waiting for the changelog records that table
    writes leave in its producer buffer; a ``kill -9`` could then keep offsets newer than
    the stored states, and the replay would miss readings. Awaiting the records here,
    before the step ends and its batch is acknowledged, keeps the order outputs → states
    → offsets. Rewriting a record is harmless, so a failed try is simply repeated.

    The last record of each changelog partition is sent on its own, after the others:
    a broker whose end offset is the last record *batch*'s first offset + 1 (Tansu, the
    local stack's broker) would otherwise hide the tail of that batch from recovery.
    """
    last: dict[int, tuple[bytes, bytes]] = {}
    first: list[tuple[int, bytes, bytes]] = []
    for key, value in records.items():
        table.data[key] = value  # the table's contents; the changelog record follows
        p = table.partition_for_key(key)
        if p in last:
            first.append((p, *last[p]))
        last[p] = (key, value)
    for batch in (first, [(p, k, v) for p, (k, v) in last.items()]):
        futures = [table.send_changelog(p, k, v) for p, k, v in batch]
        if futures:
            await asyncio.gather(*futures)


class QuietClock:
    """Wall-clock seconds of silence per site, counted only while caught up.

    Per partition, a clock advances with the wall clock while the worker has processed
    all that the partition holds (a backlog, a restart or a rebalance is no silence,
    CONTRACT.md §3). A site's quiet time is its partition's clock now minus its value
    when the site last sent a message; from ``idle_s`` on, the site's watermark runs on
    by that much. Timer ticks further apart than ``max_step_s`` count ``max_step_s``.
    """

    def __init__(self, idle_s: float, max_step_s: float = 2.0) -> None:
        self.idle_s = idle_s
        self.max_step_s = max_step_s
        self.clock: dict[int, float] = {}
        self.anchor: dict[str, tuple[int, float]] = {}
        self._last: float | None = None

    def reset(self) -> None:
        """Forget every site's silence (a takeover)."""
        self.clock.clear()
        self.anchor.clear()
        self._last = None

    def pause(self) -> None:
        """The time until the next tick does not count (tables not ready)."""
        self._last = None

    def tick(self, now: float, caught_up: Iterable[int]) -> None:
        """Advance the clocks of the ``caught_up`` partitions to ``now`` (monotonic s)."""
        step = 0.0 if self._last is None else min(max(now - self._last, 0.0), self.max_step_s)
        self._last = now
        for p in caught_up:
            self.clock[p] = self.clock.get(p, 0.0) + step

    def heard(self, site: str, partition: int) -> None:
        """The site sent a message now."""
        self.anchor[site] = (partition, self.clock.get(partition, 0.0))

    def quiet_s(self, site: str, partition: int) -> float | None:
        """The site's quiet seconds once they reach ``idle_s``, else None."""
        now = self.clock.get(partition, 0.0)
        quiet = now - self.anchor.setdefault(site, (partition, now))[1]
        return quiet if quiet >= self.idle_s else None

    def quiet_sites(self) -> int:
        """How many sites are quiet now (their watermark runs on with the clock)."""
        return sum(self.clock.get(p, 0.0) - a >= self.idle_s for p, a in self.anchor.values())


def owned_partitions(app: Any, topics: Iterable[str]) -> set[int]:
    """The partitions of ``topics`` this worker holds as active (not as a standby).

    A table also holds standby copies of other workers' partitions; a timer must act only
    on the sites of its own, or two workers would write the same site's windows.
    """
    return {p for _, p in owned_tps(app, topics)}


class LoopLock:
    """A lock serialising an agent's steps and timers, created on the running loop."""

    _lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """The agent's lock."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock


class SiteTable(faust.Table):
    """A table keyed by site_id whose changelog partition is the site's Kafka partition.

    Faust would write a table key to the partition of the event being processed; a
    site's state must live in the partition its readings hash to, whichever topic or
    timer wrote it, so that the worker owning the readings also owns the state.
    """

    def partition_for_key(self, key: Any) -> int:
        return partition_for(key, self.partitions or self.app.conf.topic_partitions)


class _States(Mapping[str, SiteState]):
    """The table seen as decoded site states, decoding each stored record once."""

    def __init__(self, owner: ReadingsAgent) -> None:
        self._owner = owner

    def __getitem__(self, site: str) -> SiteState:
        raw = self._owner.table.get(site.encode())
        if raw is None:
            raise KeyError(site)
        cached = self._owner.cache.get(site)
        if cached is not None and cached[0] is raw:
            return cached[1]
        state = SiteState.decode(raw)
        self._owner.cache[site] = (raw, state)
        return state

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in list(self._owner.table.keys()))

    def __len__(self) -> int:
        return len(self._owner.table)


class ReadingsAgent(LoopLock):
    """Binds one pipeline (traffic or air) to the app."""

    def __init__(self, app: faust.App, settings: Settings, pipeline: Pipeline, source: str,
                 aggregates: str, deadletter: str, reader: Reader) -> None:
        self.app = app
        self.settings = settings
        self.kind = pipeline.kind
        n = settings.topic_partitions
        self.partitions = n
        self.processor = Processor(pipeline, partition_of=self._partition_of)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        src = settings.topic(source)
        rekey = f"{settings.group_id}-{source}-rekey"
        self.sources = app.topic(src, rekey, partitions=n, internal=True, **raw)
        self.rekey_out = app.topic(rekey, partitions=n, internal=True, **raw)
        self.aggregates_out = app.topic(settings.topic(aggregates), partitions=n,
                                        internal=True, **raw)
        self.deadletter_out = app.topic(settings.topic(deadletter), partitions=n,
                                        internal=True, **raw)
        self.table: Any = app.tables.add(SiteTable(
            app, name=f"{self.kind}-sites", partitions=n,
            key_type=bytes, value_type=bytes,  # bytes -> Faust's "raw" codec, both ways
            help=f"{self.kind} site states (windows, watermark, applied offsets)"))
        self.cache: dict[str, tuple[bytes, SiteState]] = {}
        self.quiet = QuietClock(settings.idle_flush_s)
        # Puts source messages the consumer dropped back into the batches.
        self.offsets = OffsetGuard(self.kind, reader, faust_ack(app))
        # Up to 50,000 messages a batch: with thousands of sites sending single readings,
        # the fixed cost of a step per site (state copy, windows, one changelog record)
        # is shared by several readings instead of one. A batch of large frames is stepped
        # in chunks of at most ``step_max_bytes`` of values, which bounds the step's
        # memory and duration (docs/performance.md).
        self.batch_max = 50_000
        self.batch_within_s = 0.1
        self.step_max_bytes = 4 << 20
        app.agent(self.sources, name=f"{self.kind}-readings")(self._run)
        app.timer(interval=1.0, name=f"{self.kind}-quiet-sites")(self._quiet_sites)
        self.offsets.attach(app, self.sources.topics, self._step_messages)
        app.on_partitions_assigned.connect(self._on_assigned)

    def _partition_of(self, site: str) -> int:
        return partition_for(site.encode(), self.partitions)

    async def _on_assigned(self, *args: Any, **kwargs: Any) -> None:
        # Quiet time counts from the takeover: a restart or a rebalance is no silence.
        self.quiet.reset()

    async def _run(self, stream: Any) -> None:
        async for events in stream.take_events(self.batch_max, within=self.batch_within_s):
            await finish(self.offsets.handle([ev.message for ev in events],
                                             self._step_messages))

    async def _step_messages(self, messages: list[Any]) -> None:
        await finish(self.step_chunks([self._raw(m) for m in messages]))

    def _raw(self, m: Any) -> RawMessage:
        if m.topic == self.rekey_out.get_topic_name():
            h = {k: v for k, v in (m.headers or [])}
            return RawMessage(h[ORIGIN_TOPIC].decode(), int(h[ORIGIN_PARTITION]),
                              int(h[ORIGIN_OFFSET]), m.key, m.value, forwarded=True)
        return RawMessage(m.topic, m.partition, m.offset, m.key, m.value)

    async def step_chunks(self, messages: list[RawMessage]) -> None:
        """Step a batch in arrival order, in chunks of at most ``step_max_bytes``.

        Each chunk is a whole step (outputs delivered, then states stored) before the
        next begins, exactly as if Faust had handed over smaller batches.
        """
        start, size = 0, 0
        for i, m in enumerate(messages):
            size += len(m.value or b"")
            if size > self.step_max_bytes and i > start:
                await self.step(messages[start:i])
                start, size = i, len(m.value or b"")
        if start < len(messages):
            await self.step(messages[start:])

    async def step(self, messages: list[RawMessage]) -> None:
        """Process one batch and deliver its outputs (the agent's body)."""
        async with self.lock:
            out = self._process(messages, time.time())
            await self._deliver(out)
            for site in out.changed:
                self.quiet.heard(site, self._partition_of(site))

    def _process(self, messages: list[RawMessage], now: float) -> StepOutput:
        return self.processor.step_isolating(messages, _States(self), now)

    def _caught_up(self, partition: int) -> bool:
        """True when this worker has processed all that the site partition holds, in the
        readings topic and in the re-key topic (Kafka's high watermark of the last fetch
        against the offset due next)."""
        for topic in self.sources.topics:
            tp = (topic, partition)
            due = self.offsets.expected.get(tp, self.offsets.starts.get(tp))
            high = self.app.consumer.highwater(TP(topic, partition))
            if due is None or high is None or due < high:
                return False
        return not self.offsets.lock.locked()

    async def _quiet_sites(self) -> None:
        """Run a quiet site's watermark on with the clock (CONTRACT.md §3)."""
        if not tables_ready(self.app):
            self.quiet.pause()
            return
        async with self.lock:
            mine = owned_partitions(self.app, self.sources.topics)
            self.quiet.tick(time.monotonic(), {p for p in mine if self._caught_up(p)})
            states = _States(self)
            merged = StepOutput()
            for site in list(states):
                p = self._partition_of(site)
                if p not in mine:
                    continue  # a standby copy of another worker's site
                quiet = self.quiet.quiet_s(site, p)
                if quiet is None:
                    continue
                state = states[site]
                out = self.processor.run_on(site, state, state.windows.watermark + quiet)
                merged.aggregates += out.aggregates
                merged.changed.update(out.changed)
            if merged.changed:
                await self._deliver(merged)

    async def _deliver(self, out: StepOutput) -> None:
        await retry_kafka(lambda: self._send(out), self.kind)
        records = {}
        for site, state in out.changed.items():
            data = state.encode()
            records[site.encode()] = data
            self.cache[site] = (data, state)
        await retry_kafka(lambda: store_states(self.table, records), self.kind)

    async def _send(self, out: StepOutput) -> None:
        pending = []
        for key, rec in out.deadletters:
            pending.append(await self.deadletter_out.send(key=key, value=orjson.dumps(rec)))
        for site, m in out.rekey:
            headers = [(ORIGIN_TOPIC, m.topic.encode()),
                       (ORIGIN_PARTITION, str(m.partition).encode()),
                       (ORIGIN_OFFSET, str(m.offset).encode())]
            pending.append(await self.rekey_out.send(key=site.encode(), value=m.value,
                                                     headers=headers))
        closed_at = [(CLOSED_AT, repr(time.time()).encode())]
        for site, rec in out.aggregates:
            pending.append(await self.aggregates_out.send(
                key=site.encode(), value=orjson.dumps(rec), headers=closed_at))
        if pending:
            await asyncio.gather(*pending)
