"""Delivery guards between Faust's consumer and the agents.

**Events no agent started are never acknowledged** (:class:`Event`). Faust's stream loop
drops an event it reads while a rebalance is under way (flow control suspended) or that was
fetched in an earlier consumer generation; it is a message the conductor was still holding
when the rebalance began, after the agents' buffers were cleared. faust-streaming 0.15.3
then *acknowledges* the dropped event, as it does a filtered one, so the consumer may commit
its offset although no agent processed it. After the revocation the consumer has also
forgotten its committed offsets, so an acknowledgement of offset N in the new generation
makes it commit N + 1: every message between the real committed offset and N is then
skipped too. That is how a ``kill -9`` restart with a backlog lost one reading, or a burst of
aggregates, in testing (CHANGELOG 0.1.0, Known problems).

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
exactly where they belong. Offsets that cannot be read (deleted by retention meanwhile)
are counted as missed and logged as an error: that count must stay 0.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types.tuples import ConsumerMessage

from ..settings import Settings

__all__ = ["Event", "KafkaReader", "OffsetGuard", "faust_ack", "unstarted_events"]

log = logging.getLogger(__name__)


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


class Reader(Protocol):
    """Reads a partition's committed offset and a range of its messages from Kafka."""

    async def committed(self, topic: str, partition: int) -> int | None: ...

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]: ...


class KafkaReader:
    """A Kafka client outside the consumer group: reads the group's committed offsets and
    given offsets of a partition. One per worker, shared by its agents."""

    def __init__(self, settings: Settings, group_id: str, *,
                 client_options: Callable[[], dict[str, Any]] | None = None,
                 read_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.group_id = group_id
        self.client_options = client_options or (lambda: {})
        self.read_timeout_s = read_timeout_s
        self._client: AIOKafkaConsumer | None = None
        self._lock: asyncio.Lock | None = None

    async def _get(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                group_id=self.group_id, enable_auto_commit=False,
                auto_offset_reset="none", **self.client_options())
            await client.start()
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
            offset = await client.committed(TopicPartition(topic, partition))
            return None if offset is None or offset < 0 else int(offset)

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        """The messages at offsets ``first``..``last`` of a partition, in order; fewer if
        some no longer exist (or cannot be read within the read timeout)."""
        tp = TopicPartition(topic, partition)
        async with self.lock:
            client = await self._get()
            client.assign([tp])
            client.seek(tp, first)
            got: list[Any] = []
            deadline = time.monotonic() + self.read_timeout_s
            while time.monotonic() < deadline:
                batch = await client.getmany(tp, timeout_ms=500)
                records = batch.get(tp, [])
                got += [r for r in records if first <= r.offset <= last]
                if records and records[-1].offset >= last:
                    break
            client.unsubscribe()
            return got

    async def close(self) -> None:
        """Stop the client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.stop()


class OffsetGuard:
    """Puts the messages the consumer dropped back into an agent's batches (see the module
    docstring). :meth:`reset` at each partition assignment."""

    def __init__(self, agent: str, reader: Reader,
                 ack: Callable[[Record], None] | None = None) -> None:
        self.agent = agent
        self.reader = reader
        self.ack = ack
        self.expected: dict[tuple[str, int], int] = {}
        self.repaired = 0
        self.missed = 0

    def reset(self) -> None:
        """Forget the expected offsets (call when partitions are assigned)."""
        self.expected.clear()

    async def complete(self, batch: Sequence[Any]) -> list[Any]:
        """The batch with every dropped message put back before the message that follows
        it. A message at or below the expected offset is a replay and passes unchanged."""
        out: list[Any] = []
        for m in batch:
            key = (m.topic, m.partition)
            if key not in self.expected:  # the first message since the takeover
                committed = await self.reader.committed(m.topic, m.partition)
                self.expected[key] = -1 if committed is None else committed
            want = self.expected[key]
            if 0 <= want < m.offset:
                out += await self._fetch(m.topic, m.partition, want, m.offset - 1)
            if m.offset >= want:
                self.expected[key] = m.offset + 1
            out.append(m)
        return out

    async def _fetch(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        got = await self.reader.read(topic, partition, first, last)
        self.repaired += len(got)
        lost = (last - first + 1) - len(got)
        log.warning("%s: offsets %d..%d of %s[%d] were dropped by the consumer; read %d of "
                    "them from Kafka to process in their place", self.agent, first, last,
                    topic, partition, len(got))
        if lost:
            self.missed += lost
            log.error("%s: %d of offsets %d..%d of %s[%d] cannot be read from Kafka: those "
                      "messages are missed", self.agent, lost, first, last, topic, partition)
        return got

    def done(self, batch: Sequence[Any]) -> None:
        """Acknowledge to Faust the repaired messages of a processed batch, so that its
        commits are not held back by a dropped offset."""
        if self.ack is not None:
            for m in batch:
                if not isinstance(m, ConsumerMessage):
                    self.ack(m)


def faust_ack(app: faust.App) -> Callable[[Record], None]:
    """Acknowledge a message read outside Faust as processed, in Faust's consumer."""

    def ack(m: Record) -> None:
        app.consumer.ack(ConsumerMessage(m.topic, m.partition, m.offset, 0.0, 0, None, m.key,
                                         m.value, None))
    return ack
