"""Batch lanes: the project's topics reach the agents as whole fetched batches.

faust-streaming hands every message to an agent as an ``Event`` of its own: about 100 µs
of asyncio machinery per message, and a recovery sequence that drops fetched messages
after a restart (docs/architecture.md, "Batch lanes"). The worker's consumer here is
Faust's aiokafka consumer with one change: :meth:`LaneConsumer._drain_messages` hands the
records of a project topic, as fetched, to that topic's :class:`Lane`, and every other
record (table changelogs, during recovery and for standbys) to Faust as before. Faust keeps
the group membership, its assignor, co-partitioned tables, standbys, recovery and the
commit timer; the lane owns the offsets of its topics:

* **Where each partition starts.** At each assignment the lane asks Kafka for the group's
  committed offset of each partition (else the partition's first offset), seeks there and
  expects it. A fetched batch starting past the offset due is dropped and the partition
  sought back; offsets below it (handed over again) are dropped. So each offset reaches
  the agent once and in order, whatever the consumer's position did meanwhile.
* **What is stale.** A batch fetched in an earlier consumer generation, while a rebalance
  or the tables' recovery runs (``app.tables.actives_ready`` false), or before a
  revocation, is dropped, and its partition sought back to the offset due.
* **Revocations.** :meth:`LaneConsumer.on_partitions_revoked` lets each lane's step in
  flight finish, commits what is committable, and only then lets Faust's revocation go on.
* **Commits.** An offset is committable only when the step that took it has delivered
  its outputs and stored its states (:meth:`Lane.run`; or once the agent says so,
  :meth:`Lane.ack`, for the notifier). Faust's commit timer commits it
  (:meth:`LaneConsumer._new_offset`).
* **What the worker has read.** Per partition, the high watermark of the last fetch and
  when it was fetched (:meth:`Lane.high`), and the offset below which every message was
  processed (:meth:`Lane.processed`): the quiet-site rule (CONTRACT.md §3) needs both.

A lane whose queued messages pass its limits stops its partitions being fetched until the
agent has taken them (the others carry on).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

__all__ = ["FETCH_MAX_WAIT_MS", "Lane", "LaneConsumer", "LaneTransport", "Take", "lanes_of",
           "owned_tps", "retry", "tables_ready"]

log = logging.getLogger(__name__)

#: The longest a fetch waits for new records (ms). Faust hard-wires 1.5 s, which a record
#: written just after a fetch went out waits in full on the local broker; a window closed
#: then reaches the store that much later (docs/performance.md).
FETCH_MAX_WAIT_MS = 100

#: How long the consumer waits for Kafka's committed offsets after an assignment (s)
#: before it tries again.
RESOLVE_TIMEOUT_S = 10.0


async def retry(call: Callable[[], Awaitable[Any]], what: str,
                errors: tuple[type[BaseException], ...],
                fatal: tuple[type[BaseException], ...] = ()) -> Any:
    """Await ``call()`` until it returns without one of ``errors`` (those of ``fatal``
    excepted), backing off from 0.2 s, doubling up to 30 s; ``what`` names it in the log."""
    delay = 0.2
    while True:
        try:
            return await call()
        except fatal:
            raise
        except errors as exc:
            log.warning("%s failed (%r); retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def owned_tps(app: Any, topics: Iterable[str]) -> list[tuple[str, int]]:
    """The partitions of ``topics`` this worker holds as active (not as a standby)."""
    names = set(topics)
    return sorted((tp.topic, tp.partition) for tp in app.assignor.assigned_actives()
                  if tp.topic in names)


def tables_ready(app: Any) -> bool:
    """Tables recovered and no rebalance under way: a timer may read and write them."""
    return bool(app.tables.recovery.completed.is_set() and not app.rebalancing)


def lanes_of(app: Any) -> dict[str, list[Lane]]:
    """The app's lanes by topic name (made on first use); a topic read by two agents (the
    aggregates: the sink and the alert agent) has two."""
    lanes: dict[str, list[Lane]] | None = getattr(app, "lanes", None)
    if lanes is None:
        lanes = {}
        app.lanes = lanes
    return lanes


@dataclass
class Take:
    """What an agent takes in one iteration: whole fetched batches, in fetch order (each
    one partition's consecutive offsets). ``ends``: per partition, the offset after the
    last message taken."""

    messages: list[Any]
    ends: dict[TP, int]
    epoch: int

    def __len__(self) -> int:
        return len(self.messages)


@dataclass
class _Batch:
    tp: TP
    records: list[Any]
    size: int
    epoch: int


@dataclass
class LaneCounts:
    """What a lane did since the process started (``/counters``)."""

    batches: int = 0
    messages: int = 0
    # batches dropped as stale (old generation, rebalance, recovery) and refetched
    stale_batches: int = 0
    # batches that did not start at the offset due: dropped and the partition sought back
    rewinds: int = 0
    # messages below the offset due (handed over again): dropped
    duplicates: int = 0
    # offsets Kafka no longer held where a partition was due to start (retention)
    missed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Part:
    """A partition's offsets in the lane, for the current assignment."""

    due: int  # the next offset to take from the fetcher
    done: int  # every offset below it is processed (committable)
    high: tuple[int, float] | None = None  # (high watermark, fetched at, epoch ms)


class Lane:
    """One agent's lane over ``topics``: fetched batches in, steps out, offsets owned.

    ``max_messages`` / ``max_bytes``: queued beyond either, the lane's partitions are not
    fetched until the agent catches up.
    """

    def __init__(self, app: Any, name: str, topics: Iterable[str], *,
                 max_messages: int = 200_000, max_bytes: int = 64 << 20) -> None:
        self.app = app
        self.name = name
        self.topics = set(topics)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.counts = LaneCounts()
        self.epoch = 0
        self.closed = True  # until the first assignment
        self.assigned: set[TP] = set()
        self.parts: dict[TP, _Part] = {}
        self.seeks: dict[TP, int] = {}  # for the consumer to carry out
        self._queue: collections.deque[_Batch] = collections.deque()
        self._queued = 0
        self._queued_bytes = 0
        self._wake: asyncio.Event | None = None
        self._inflight: asyncio.Future[Any] | None = None
        lanes = lanes_of(app)
        for t in self.topics:
            if any(lane.name == name for lane in lanes.get(t, ())):
                raise ValueError(f"topic {t} already has a lane named {name}")
            lanes.setdefault(t, []).append(self)

    # -- what the consumer calls -------------------------------------------------------

    @property
    def full(self) -> bool:
        """Queued past a limit: the lane's partitions are not fetched meanwhile."""
        return self._queued >= self.max_messages or self._queued_bytes >= self.max_bytes

    def unresolved(self) -> list[TP]:
        """Assigned partitions whose starting offset is not known yet."""
        return sorted(tp for tp in self.assigned if tp not in self.parts) if not self.closed \
            else []

    def start(self, epoch: int, starts: dict[TP, int]) -> None:
        """The offsets the partitions start at (asked in ``epoch``)."""
        if epoch != self.epoch or self.closed:
            return
        for tp, offset in starts.items():
            if tp in self.assigned and tp not in self.parts:
                self.parts[tp] = _Part(offset, offset)

    def offer(self, tp: TP, records: list[Any], generation: int,
              high: tuple[int, float] | None) -> int | None:
        """A fetched batch of ``tp``: queue what is due of it. Return an offset to seek
        the partition to when the batch was dropped (stale, or not starting where due)."""
        part = self.parts.get(tp)
        if part is None or self.closed or tp not in self.assigned:
            self.counts.stale_batches += 1
            return None  # the assignment resolves (and seeks) its partitions
        if high is not None:
            part.high = high
        if (generation != self.app.consumer_generation_id
                or not self.app.tables.actives_ready or self.app.rebalancing):
            self.counts.stale_batches += 1
            return part.due
        first = records[0].offset
        if first > part.due:
            self.counts.rewinds += 1
            log.warning("%s: %s[%d] was fetched from offset %d, but %d is due: dropped, and "
                        "the partition sought back", self.name, tp.topic, tp.partition, first,
                        part.due)
            return part.due
        if first < part.due:
            n = len(records)
            records = [r for r in records if r.offset >= part.due]
            self.counts.duplicates += n - len(records)
            if not records:
                return None
        part.due = records[-1].offset + 1
        size = sum(len(r.value or b"") for r in records)
        self._queue.append(_Batch(tp, records, size, self.epoch))
        self._queued += len(records)
        self._queued_bytes += size
        if self._wake is not None:
            self._wake.set()
        return None

    def note_high(self, tp: TP, high: tuple[int, float]) -> None:
        """A fetch answered for ``tp`` (with no records of it, maybe)."""
        part = self.parts.get(tp)
        if part is not None:
            part.high = high

    def assign(self, assigned: Iterable[TP]) -> None:
        """Partitions assigned: their starting offsets are asked anew."""
        self.epoch += 1
        self.assigned = {tp for tp in assigned if tp.topic in self.topics}
        self.parts.clear()
        self.seeks.clear()
        self.closed = False

    async def revoke(self) -> None:
        """A revocation: take nothing more, let the step in flight finish."""
        self.closed = True
        self._drop_queue()
        if self._inflight is not None:
            await asyncio.shield(self._inflight)

    def forget(self) -> None:
        """After the revocation's commit: nothing of the old assignment is valid."""
        self.epoch += 1
        self.assigned = set()
        self.parts.clear()
        self.seeks.clear()

    def committable(self) -> dict[TP, int]:
        """Per partition, the offset below which everything is processed."""
        return {tp: p.done for tp, p in self.parts.items()}

    # -- what the agent and its timers call ----------------------------------------------

    def high(self, topic: str, partition: int) -> tuple[int, float] | None:
        """The partition's high watermark at the last fetch and when (epoch ms) that
        fetch was answered; None when not known (not assigned, not fetched yet)."""
        part = self.parts.get(cast(TP, TopicPartition(topic, partition)))
        return None if part is None else part.high

    def processed(self, topic: str, partition: int) -> int | None:
        """The offset below which every message of the partition was processed, since
        the takeover; None when not known yet."""
        part = self.parts.get(cast(TP, TopicPartition(topic, partition)))
        return None if part is None else part.done

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued = self._queued_bytes = 0

    async def takes(self, max_messages: int) -> AsyncIterator[Take]:
        """The agent's iteration: each item is what is queued (whole batches, at least
        one, up to about ``max_messages``), waiting until there is some."""
        while True:
            if self._wake is None:
                self._wake = asyncio.Event()
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            messages: list[Any] = []
            ends: dict[TP, int] = {}
            epoch = self._queue[0].epoch
            while self._queue and self._queue[0].epoch == epoch and (
                    not messages or len(messages) + len(self._queue[0].records)
                    <= max_messages):
                b = self._queue.popleft()
                self._queued -= len(b.records)
                self._queued_bytes -= b.size
                messages += b.records
                ends[b.tp] = b.records[-1].offset + 1
            yield Take(messages, ends, epoch)

    def _current(self, take: Take) -> bool:
        return (take.epoch == self.epoch and not self.closed
                and bool(self.app.tables.actives_ready))

    async def run(self, take: Take, step: Callable[[list[Any]], Awaitable[None]], *,
                  commit: bool = True) -> bool:
        """Run the agent's ``step`` over what it took, to its end even if the agent is
        cancelled meanwhile; then (``commit``) its offsets are committable. A take of an
        earlier assignment, or one taken while recovery runs, is not run (False): its
        partitions are fetched again from the offset due."""
        if not self._current(take):
            self.counts.stale_batches += 1
            for tp in take.ends:
                part = self.parts.get(tp)
                if part is not None and take.epoch == self.epoch:
                    self._rewind(tp, part)
            return False
        task = asyncio.ensure_future(step(take.messages))
        self._inflight = task
        monitor = getattr(self.app, "monitor", None)
        if monitor is not None:
            now = time.monotonic()
            for tp in take.ends:
                monitor.stream_inbound_time[tp] = now
        cancelled = False
        try:
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    # finish the step (its outputs and states are delivered), then let
                    # the cancellation through
                    cancelled = True
                except Exception:
                    break  # the step's own error: below
        finally:
            if self._inflight is task:
                self._inflight = None
        if task.cancelled() or task.exception() is not None:
            # Not processed: fetch its partitions again from the first offset not done.
            for tp in take.ends:
                part = self.parts.get(tp)
                if part is not None and take.epoch == self.epoch:
                    self._rewind(tp, part)
            if cancelled or task.cancelled():
                raise asyncio.CancelledError
            raise cast(BaseException, task.exception())
        self.counts.batches += len(take.ends)
        self.counts.messages += len(take.messages)
        if commit:
            for tp, end in take.ends.items():
                self.ack(tp, end, take.epoch)
        if cancelled:
            raise asyncio.CancelledError
        return True

    def _rewind(self, tp: TP, part: _Part) -> None:
        part.due = part.done
        self.seeks[tp] = part.done
        kept = [b for b in self._queue if b.tp != tp]
        for b in self._queue:
            if b.tp == tp:
                self._queued -= len(b.records)
                self._queued_bytes -= b.size
        self._queue = collections.deque(kept)

    def ack(self, tp: TP, end: int, epoch: int) -> None:
        """Everything of ``tp`` below ``end`` (taken in ``epoch``) is processed."""
        part = self.parts.get(tp)
        if part is not None and epoch == self.epoch and end > part.done:
            part.done = end


class LaneConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, handing the lanes' topics to their lanes whole."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LaneConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _lanes(self) -> dict[str, list[Lane]]:
        return lanes_of(self.app)

    def _distinct_lanes(self) -> list[Lane]:
        seen: dict[int, Lane] = {}
        for lanes in self._lanes.values():
            for lane in lanes:
                seen.setdefault(id(lane), lane)
        return list(seen.values())

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        lanes = self._distinct_lanes()
        for lane in lanes:
            await lane.revoke()
        try:  # what the finished steps made committable, while the partitions are ours
            await asyncio.wait_for(self.commit(), RESOLVE_TIMEOUT_S)
        except Exception as exc:  # the next owner processes it again: at least once
            log.warning("commit at the revocation failed: %r", exc)
        for lane in lanes:
            lane.forget()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP],
                                     generation_id: int = 0) -> None:
        for lane in self._distinct_lanes():
            lane.assign(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        tps = set(super()._filter_tps_with_pending_acks(topics))
        for lane in self._distinct_lanes():
            for tp in lane.committable():
                if topics is None or tp in topics or tp.topic in topics:
                    tps.add(tp)
        return iter(sorted(tps))

    def _new_offset(self, tp: TP) -> int | None:
        lanes = self._lanes.get(tp.topic)
        if lanes:  # what every lane of the topic has processed
            done = [lane.committable().get(tp) for lane in lanes]
            return None if None in done else min(cast(list[int], done))
        return super()._new_offset(tp)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        lanes = self._lanes
        if active_partitions is not None:
            active_partitions = {tp for tp in active_partitions
                                 if not any(lane.full for lane in lanes.get(tp.topic, ()))}
            if not active_partitions:
                await asyncio.sleep(0.01)  # every lane is full: let the agents catch up
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def _resolve(self) -> None:
        """Ask Kafka where each newly assigned lane partition starts, and seek there."""
        lanes = self._distinct_lanes()
        todo = {id(lane): (lane, lane.epoch, lane.unresolved()) for lane in lanes}
        tps = sorted({tp for _, _, ts in todo.values() for tp in ts})
        if not tps:
            return
        client = self._thread._ensure_consumer()

        async def ask() -> dict[TP, int]:
            firsts = await client.beginning_offsets(tps)
            starts: dict[TP, int] = {}
            for tp in tps:
                committed = await client.committed(tp)
                first = int(firsts[tp])
                if committed is not None and committed < first:
                    log.error("%s[%d]: committed offset %d is gone (retention); its messages "
                              "up to %d are missed", tp.topic, tp.partition, committed, first)
                    for lane in self._lanes[tp.topic]:
                        lane.counts.missed += first - committed
                starts[tp] = first if committed is None else max(int(committed), first)
            return starts

        try:
            starts = await asyncio.wait_for(self._thread.call_thread(ask), RESOLVE_TIMEOUT_S)
        except Exception as exc:
            log.warning("asking Kafka where the lanes' partitions start failed: %r", exc)
            await asyncio.sleep(0.5)
            return
        for lane, epoch, ts in todo.values():
            mine = {tp: starts[tp] for tp in ts}
            lane.start(epoch, mine)
            if lane.epoch == epoch:
                for tp, offset in mine.items():
                    lane.seeks[tp] = offset
                    if offset > 0:
                        self._committed_offset[tp] = offset

    async def _do_seeks(self) -> None:
        for lane in self._distinct_lanes():
            while lane.seeks:
                tp, offset = lane.seeks.popitem()
                if tp in lane.assigned:
                    await self.seek(tp, offset)

    def _high(self, client: Any, tp: TP) -> tuple[int, float] | None:
        try:
            high, polled = client.highwater(tp), client.last_poll_timestamp(tp)
        except Exception:  # not assigned (any more)
            return None
        if high is None or polled is None:
            return None
        return int(high), float(polled)

    async def _drain_messages(self, fetcher: Any) -> None:  # the fetcher's loop
        lanes = self._lanes
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                if self.flow_active:
                    await self._resolve()
                    await self._do_seeks()
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                generation = self.app.consumer_generation_id
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    # as Faust does: what was fetched is dropped, positions go back to the
                    # committed offsets (the lanes' positions are checked again anyway)
                    if records:
                        await self.perform_seek()
                    continue
                client = self._thread._ensure_consumer()
                if active:
                    for tp in active:
                        if tp.topic in lanes and tp not in records:
                            high = self._high(client, tp)
                            if high is not None:
                                for lane in lanes[tp.topic]:
                                    lane.note_high(tp, high)
                for tp, recs in records.items():
                    if not self.flow_active or generation != self.app.consumer_generation_id:
                        break
                    if not recs or (active is not None and tp not in active
                                    and tp not in self._buffered_partitions):
                        continue
                    high = self._high(client, tp)
                    if high is not None:
                        self.app.monitor.track_tp_end_offset(tp, high[0])
                    if tp.topic in lanes:
                        for lane in lanes[tp.topic]:
                            seek = lane.offer(tp, recs, generation, high)
                            if seek is not None:
                                lane.seeks[tp] = seek
                        continue
                    # Faust's own path, one message at a time (changelogs)
                    for record in recs:
                        message = self._to_message(tp, record)
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class _LaneConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with a short fetch wait (:data:`FETCH_MAX_WAIT_MS`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class LaneTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the lanes' consumer."""

    Consumer = LaneConsumer

