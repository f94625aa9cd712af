"""Delivery guards between Faust's consumer and the agents.

**Events no agent started are never acknowledged** (:class:`Event`). Faust's stream loop
drops an event it reads while a rebalance is under way (flow control suspended) or that was
fetched in an earlier consumer generation; it is a message the conductor was still holding
when the rebalance began, after the agents' buffers were cleared. faust-streaming 0.15.3
then *acknowledges* the dropped event, as it does a filtered one, so the consumer may commit
its offset although no agent processed it. After the revocation the consumer has also
forgotten its committed offsets, so an acknowledgement of offset N in the new generation
makes it commit N + 1: every message between the real committed offset and N is then
skipped too. (The compiled stream loop this project's wheels use does not acknowledge
them; the losses seen in testing come from elsewhere in Faust, see below.)

Faust marks a message as *tracked* when a stream takes it for processing; only then can an
agent acknowledge it. This class refuses the acknowledgement of an untracked message on a
topic whose offsets the worker commits: its offset stays uncommitted, and Kafka delivers
the message again from the committed offset once the partition is assigned. Handling it
twice is harmless: every agent skips what it already applied (the readings agents by their
per-site applied offsets, the sink by rewriting the same point).

**Offset gaps are repaired from Kafka** (:class:`OffsetGuard`). Within a partition messages
reach an agent in offset order, starting at the group's committed offset when the worker
takes the partition over. A first message past the committed offset, or a jump forward
past offsets never seen, means messages the consumer dropped. This was seen a few times in
some hundred ``kill -9`` restarts with a backlog, always at the moment Faust's recovery
hands the partitions back to the streams; the mechanism inside Faust is not pinned down.
The guard reads the missing offsets straight from Kafka, with a client of its own outside
the group, and puts them back into the batch in offset order, so the agent processes them
exactly where they belong. A restarted worker was also seen to get *none* of its backlog,
which leaves no later message to reveal the gap: so a timer reads, from each partition the
consumer has been silent on for a few seconds while the agent was idle, whatever Kafka
holds past the offset due next. A message the consumer hands over again after that, or
twice, is dropped (it was processed). Offsets that cannot be read (deleted by retention
meanwhile) are counted as missed and logged as an error: that count must stay 0.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types.tuples import ConsumerMessage

from ..settings import Settings

__all__ = ["Event", "KafkaReader", "OffsetGuard", "ReaderClosed", "faust_ack", "owned_tps",
           "retry", "tables_ready", "unstarted_events"]

log = logging.getLogger(__name__)


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


class _Count:
    """A counter shared by the worker's events (the consumer thread may ack too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


#: Events dropped by Faust's stream loop at a rebalance and left unacknowledged, so that
#: Kafka delivers them again (since the process started).
unstarted_events = _Count()


class Event(faust.Event):
    """Faust's event, except that an event no stream started is not acknowledged.

    This guards Faust's pure-Python stream iterator, which acknowledges the events it drops
    at a rebalance; its compiled iterator (used where the wheel ships it, as on x86-64
    Linux) drops them without an acknowledgement.
    """

    def ack(self) -> bool:
        m = self.message
        if not m.tracked and self.app.topics.acks_enabled_for(m.topic):
            unstarted_events.add()
            log.info("%s[%d]@%d was dropped by Faust at a rebalance before any agent took it;"
                     " left unacknowledged so that Kafka delivers it again",
                     m.topic, m.partition, m.offset)
            return False
        return bool(super().ack())


class Record(Protocol):
    """What the agents read of a message: Faust's and aiokafka's messages both have it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


TP = tuple[str, int]


class Reader(Protocol):
    """Reads offsets and messages of partitions from Kafka, outside the consumer group."""

    async def committed(self, topic: str, partition: int) -> int | None: ...

    async def beginning(self, topic: str, partition: int) -> int: ...

    async def probe(self, starts: Mapping[TP, int], max_n: int) -> dict[TP, list[Any]]: ...

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]: ...


class _QuietAssign(logging.Filter):
    """Keeps aiokafka's "Updating subscribed topics" line out of the log for the reader's
    assignments (one every few seconds); the worker's consumer (its own thread) still logs
    its own."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_quiet = _QuietAssign()
logging.getLogger("aiokafka.consumer.subscription_state").addFilter(_quiet)


def _assign(client: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
    _quiet.active.on = True
    try:
        client.assign(tps)
    finally:
        _quiet.active.on = False


class ReaderClosed(RuntimeError):
    """The worker is stopping: the reader no longer reads."""


class KafkaReader:
    """A Kafka client outside the consumer group: reads the group's committed offsets,
    partitions' first offsets, and messages from given offsets. One per worker, shared by
    its agents. Every call gives up after ``read_timeout_s`` without progress (aiokafka
    retries some requests forever)."""

    def __init__(self, settings: Settings, group_id: str, *,
                 client_options: Callable[[], dict[str, Any]] | None = None,
                 read_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.group_id = group_id
        self.client_options = client_options or (lambda: {})
        self.read_timeout_s = read_timeout_s
        self._client: AIOKafkaConsumer | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    async def _get(self) -> AIOKafkaConsumer:
        if self._closed:
            raise ReaderClosed("the offset reader is closed (the worker is stopping)")
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                group_id=self.group_id, enable_auto_commit=False,
                auto_offset_reset="none", fetch_max_wait_ms=100, **self.client_options())
            try:
                await asyncio.wait_for(client.start(), self.read_timeout_s)
            except BaseException:
                await asyncio.wait_for(client.stop(), 10)
                raise
            self._client = client
        return self._client

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition (the next to process), if any."""
        async with self.lock:
            client = await self._get()
            offset = await asyncio.wait_for(client.committed(TopicPartition(topic, partition)),
                                            self.read_timeout_s)
            return None if offset is None or offset < 0 else int(offset)

    async def beginning(self, topic: str, partition: int) -> int:
        """The partition's first offset (where a group without a commit starts)."""
        async with self.lock:
            return (await self._beginnings(await self._get(), [(topic, partition)]))[
                (topic, partition)]

    async def _beginnings(self, client: AIOKafkaConsumer, tps: Sequence[TP]) -> dict[TP, int]:
        got = await asyncio.wait_for(
            client.beginning_offsets([TopicPartition(*tp) for tp in tps]), self.read_timeout_s)
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items()}

    async def _fetch(self, client: AIOKafkaConsumer, starts: Mapping[TP, int],
                     enough: Callable[[TP, list[Any]], bool], wait_ms: int,
                     until_empty: bool) -> dict[TP, list[Any]]:
        """Messages from each start offset on (from the partition's first offset where
        the start is gone), until ``enough`` says so for every partition, or (with
        ``until_empty``) a fetch finds nothing new within ``wait_ms``, or
        ``read_timeout_s`` pass without progress."""
        first = await self._beginnings(client, list(starts))
        ktps = {tp: TopicPartition(*tp) for tp in starts}
        _assign(client, list(ktps.values()))
        for tp, start in starts.items():
            client.seek(ktps[tp], max(start, first.get(tp, 0)))
        got: dict[TP, list[Any]] = {tp: [] for tp in starts}
        deadline = time.monotonic() + self.read_timeout_s
        while time.monotonic() < deadline:
            wanted = [ktps[tp] for tp in starts if not enough(tp, got[tp])]
            if not wanted:
                break
            batch = await client.getmany(*wanted, timeout_ms=wait_ms)
            if not batch:
                if until_empty:
                    break
                continue
            deadline = time.monotonic() + self.read_timeout_s
            for ktp, records in batch.items():
                tp = (ktp.topic, ktp.partition)
                got[tp] += [r for r in records if r.offset >= starts[tp]]
        # The partitions stay assigned until the next call: stopping the client after an
        # unsubscribe() was seen to hang (aiokafka 0.14 on the local broker).
        return got

    async def probe(self, starts: Mapping[TP, int], max_n: int,
                    wait_ms: int = 300) -> dict[TP, list[Any]]:
        """The messages of each partition from its start offset on, as far as Kafka has
        them: up to about ``max_n`` a partition, fetched together; waits ``wait_ms`` when
        there are none. (Not from end offsets: the local broker under-reports them.)"""
        if not starts:
            return {}
        async with self.lock:
            got = await self._fetch(await self._get(), starts,
                                    lambda tp, recs: len(recs) >= max_n, wait_ms,
                                    until_empty=True)
        return {tp: recs for tp, recs in got.items() if recs}

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        """The messages from offset ``first`` on, in order: at least up to ``last`` where
        they exist (fewer when some are gone by retention)."""
        tp = (topic, partition)
        async with self.lock:
            got = await self._fetch(await self._get(), {tp: first},
                                    lambda _, recs: bool(recs) and recs[-1].offset >= last,
                                    wait_ms=500, until_empty=False)
        return got[tp]

    async def close(self) -> None:
        """Stop the client; later calls fail."""
        self._closed = True
        async with self.lock:
            if self._client is not None:
                client, self._client = self._client, None
                try:
                    await asyncio.wait_for(client.stop(), 10)
                except TimeoutError:
                    log.warning("the offset reader's Kafka client did not stop within 10 s")


class OffsetGuard:
    """Makes an agent see each offset of its source partitions once and in order (see the
    module docstring). :meth:`reset` at each partition assignment.

    The agent hands each batch to :meth:`handle` with its processing function; a timer
    calls :meth:`sweep`. ``ack`` acknowledges to Faust a message read from Kafka here
    (:func:`faust_ack`); None when ``process`` acknowledges what it is given itself.
    """

    def __init__(self, agent: str, reader: Reader,
                 ack: Callable[[Record], None] | None = None, *,
                 idle_s: float = 10.0, starved_s: float = 30.0, grace_s: float = 5.0,
                 max_pause_s: float = 60.0, max_read: int = 10_000) -> None:
        self.agent = agent
        self.reader = reader
        self.ack = ack
        self.idle_s = idle_s
        self.starved_s = starved_s
        self.grace_s = grace_s
        self.max_pause_s = max_pause_s
        self.max_read = max_read
        # per source partition since the takeover: the offset due next, and when (monotonic
        # s) the consumer last handed over a message of it
        self.expected: dict[TP, int] = {}
        self.received: dict[TP, float] = {}
        # where the consumer starts each partition (asked once); when the sweep may ask
        # Kafka about a partition again (monotonic s) and the pause before that
        self.starts: dict[TP, int] = {}
        self.pause: dict[TP, tuple[float, float]] = {}
        # messages the sweep found waiting: (offset due, when first found)
        self.found: dict[TP, tuple[int, float]] = {}
        self.assigned_at = time.monotonic()
        self.active_at = self.assigned_at  # the takeover, or the end of the last batch
        # since the process started: offsets the consumer skipped, read here (repaired);
        # offsets read here from a silent partition, which the consumer may have dropped
        # or only delayed (swept); offsets handed over again, dropped (duplicates); offsets
        # Kafka no longer held (missed)
        self.repaired = 0
        self.swept = 0
        self.duplicates = 0
        self.missed = 0
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises :meth:`handle` and :meth:`sweep` (created on the running loop)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def reset(self) -> None:
        """Forget the offsets seen (call when partitions are assigned)."""
        self.expected.clear()
        self.received.clear()
        self.starts.clear()
        self.pause.clear()
        self.found.clear()
        self.assigned_at = self.active_at = time.monotonic()

    async def _retry(self, call: Callable[[], Awaitable[Any]], what: str) -> Any:
        """A reader call, tried until Kafka answers (a Kafka error, a timeout): a batch must
        not be processed, and acknowledged, with its gaps unknown."""
        return await retry(call, f"{self.agent}: reading {what} from Kafka", (Exception,),
                           fatal=(ReaderClosed,))

    async def _start(self, tp: TP, retry: bool = True) -> int:
        """Where the consumer starts a partition after a takeover: the group's committed
        offset, else the partition's first offset (``auto_offset_reset="earliest"``).
        With ``retry``, asked until Kafka answers; else a failure raises."""

        async def ask(call: Callable[[], Awaitable[Any]], what: str) -> Any:
            return await (self._retry(call, what) if retry else call())

        committed = await ask(lambda: self.reader.committed(*tp), "a committed offset")
        if committed is not None:
            return int(committed)
        return int(await ask(lambda: self.reader.beginning(*tp), "a first offset"))

    async def complete(self, batch: Sequence[Any]) -> list[Any]:
        """The batch with each message the consumer skipped read from Kafka and put back in
        its place, and without messages handed over a second time since the takeover."""
        out: list[Any] = []
        for m in batch:
            tp = (m.topic, m.partition)
            want = self.expected.get(tp)
            if want is None:  # the first message since the takeover
                want = self.starts.get(tp)
                if want is None:
                    want = self.starts[tp] = await self._start(tp)
            # below the offset due: handed over again, or older than the committed offset
            # (processed before it was committed)
            if m.offset < want:
                self.duplicates += 1
                continue
            if m.offset > want:
                out += await self._fetch(tp, want, m.offset - 1, "were dropped by the consumer")
            self.expected[tp] = m.offset + 1
            out.append(m)
        return out

    async def _fetch(self, tp: TP, first: int, last: int, why: str) -> list[Any]:
        got = [r for r in await self._retry(lambda: self.reader.read(tp[0], tp[1], first, last),
                                            "skipped messages")
               if r.offset <= last]
        self.repaired += len(got)
        self._log(tp, first, last, got, why)
        return got

    def _log(self, tp: TP, first: int, last: int, got: list[Any], why: str) -> None:
        log.warning("%s: offsets %d..%d of %s[%d] %s; read %d of them from Kafka to process "
                    "in their place", self.agent, first, last, tp[0], tp[1], why, len(got))
        lost = (last - first + 1) - len(got)
        if lost:
            self.missed += lost
            log.error("%s: %d of offsets %d..%d of %s[%d] cannot be read from Kafka: those "
                      "messages are missed", self.agent, lost, first, last, tp[0], tp[1])

    async def handle(self, batch: Sequence[Any],
                     process: Callable[[list[Any]], Awaitable[None]]) -> list[Any]:
        """Complete a batch the consumer handed over, process it, and acknowledge what was
        read from Kafka; return the messages processed."""
        async with self.lock:
            now = time.monotonic()
            for tp in {(m.topic, m.partition) for m in batch}:
                self.received[tp] = now
                self.pause.pop(tp, None)
                self.found.pop(tp, None)
            out = await self.complete(batch)
            if out:
                await process(out)
                self.done(out)
            self.active_at = time.monotonic()
            return out

    async def sweep(self, owned: Iterable[TP],
                    process: Callable[[list[Any]], Awaitable[None]],
                    ready: Callable[[], bool] = lambda: True) -> int:
        """Read from Kafka and process what the consumer has not handed over of partitions
        it has been silent on for ``idle_s`` while the agent was idle too (or for
        ``starved_s`` while it was busy with others); return the count read.

        A restarted worker was seen, now and then, to get none of its backlog at all; the
        check of :meth:`complete` needs a later message to notice a skip, and none came.
        Kafka is asked without holding up the agent; a partition the consumer hands
        something over of meanwhile is left to it, and messages are taken only when a
        second look ``grace_s`` later still finds them waiting (they may have just been
        written). Whatever is read here and handed over later is dropped as handed over
        twice. A partition found at its end is asked again after a doubling pause (up to
        ``max_pause_s``). Nothing is processed once ``ready()`` turns false (a rebalance)
        or the partitions were assigned anew.
        """
        if self.lock.locked():
            return 0
        now = time.monotonic()
        agent_idle = now - self.active_at >= self.idle_s
        silent = {tp: now - max(self.received.get(tp, 0.0), self.assigned_at) for tp in owned}
        idle = sorted(tp for tp, q in silent.items()
                      if (q >= self.starved_s or (q >= self.idle_s and agent_idle))
                      and self.pause.get(tp, (0.0, 0.0))[0] <= now)
        if not idle:
            return 0
        seen = {tp: self.received.get(tp) for tp in idle}
        takeover = self.assigned_at
        try:
            starts = {tp: await self._due(tp, takeover) for tp in idle}
            found = await self.reader.probe(starts, self.max_read)
        except ReaderClosed:
            return 0
        except Exception as exc:  # Kafka unreachable: the next tick tries again
            log.warning("%s: sweep of silent partitions failed: %r", self.agent, exc)
            return 0
        n = 0
        async with self.lock:
            for tp in idle:
                if self.assigned_at != takeover or not ready():
                    break  # a rebalance meanwhile: the partitions may be another worker's
                got = [r for r in found.get(tp, ()) if r.offset < starts[tp] + self.max_read]
                if (self.received.get(tp) != seen[tp]
                        or self.expected.get(tp, starts[tp]) != starts[tp]):
                    continue  # the consumer handed something over meanwhile
                if not got:
                    wait = min(max(self.pause.get(tp, (0.0, 0.0))[1] * 2, self.idle_s),
                               self.max_pause_s)
                    self.pause[tp] = (time.monotonic() + wait, wait)
                    continue
                self.pause.pop(tp, None)
                first_found = self.found.setdefault(tp, (starts[tp], now))
                if first_found[0] != starts[tp]:
                    self.found[tp] = (starts[tp], now)
                    continue
                if now - first_found[1] < self.grace_s:
                    continue  # maybe just written: the consumer gets a few seconds more
                del self.found[tp]
                self.swept += len(got)
                self._log(tp, starts[tp], got[-1].offset, got,
                          f"are in Kafka but the consumer handed over nothing of that "
                          f"partition in {silent[tp]:.0f} s")
                self.expected[tp] = got[-1].offset + 1
                try:
                    await process(got)
                except Exception:
                    # not processed: leave them to the consumer or the next sweep
                    log.exception("%s: processing %d messages read from %s[%d] failed",
                                  self.agent, len(got), *tp)
                    self.expected[tp] = starts[tp]
                    continue
                self.done(got)
                n += len(got)
        return n

    async def _due(self, tp: TP, takeover: float) -> int:
        """The offset due next in a partition: after the last one seen, else where the
        consumer starts it (asked once per takeover)."""
        if tp in self.expected:
            return self.expected[tp]
        if tp in self.starts:
            return self.starts[tp]
        start = await self._start(tp, retry=False)
        if self.assigned_at == takeover and tp not in self.starts:
            self.starts[tp] = start
        return start

    def attach(self, app: Any, topics: Iterable[str],
               process: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Wire the guard to the app: :meth:`reset` at each partition assignment, and a
        timer (every 4 s) sweeping the partitions of ``topics`` this worker holds, with
        the agent's ``process``, while no rebalance is under way."""
        names = list(topics)

        async def on_assigned(*args: Any, **kwargs: Any) -> None:
            self.reset()

        async def sweep() -> None:
            if tables_ready(app):
                await self.sweep(owned_tps(app, names), process, lambda: tables_ready(app))

        app.on_partitions_assigned.connect(on_assigned)
        app.timer(interval=4.0, name=f"{self.agent}-offset-sweep")(sweep)

    def counts(self) -> dict[str, int]:
        """The counters, as ``/counters`` shows them."""
        return {"repaired": self.repaired, "swept": self.swept,
                "duplicates": self.duplicates, "missed": self.missed}

    def done(self, batch: Sequence[Any]) -> None:
        """Acknowledge to Faust the messages of a processed batch that were read here, so
        that its commits are not held back by a skipped offset."""
        if self.ack is not None:
            for m in batch:
                if not isinstance(m, ConsumerMessage):
                    self.ack(m)


def owned_tps(app: Any, topics: Iterable[str]) -> list[TP]:
    """The partitions of ``topics`` this worker holds as active (not as a standby)."""
    names = set(topics)
    return sorted((tp.topic, tp.partition) for tp in app.assignor.assigned_actives()
                  if tp.topic in names)


def tables_ready(app: Any) -> bool:
    """Tables recovered and no rebalance under way: a timer may read and write them."""
    return bool(app.tables.recovery.completed.is_set() and not app.rebalancing)


def faust_ack(app: faust.App) -> Callable[[Record], None]:
    """Acknowledge a message read outside Faust as processed, in Faust's consumer."""

    def ack(m: Record) -> None:
        app.consumer.ack(ConsumerMessage(m.topic, m.partition, m.offset, 0.0, 0, None, m.key,
                                         m.value, None))
    return ack
