"""A step's Kafka records, sent as whole record batches, one run per topic-partition.

A step may produce thousands of records: aggregates, dead letters, re-keyed messages,
changelog records. Sending each through the producer's ``send`` costs a call into Faust's
producer (sensors, header conversion), one into aiokafka's (a future per record, its
accumulator, a debug log line) and a future to await: ≈ 20 µs a record, a fifth of a
single-readings worker's time (docs/performance.md). :class:`Outbox` instead appends each
record to an aiokafka record batch of its topic-partition (the C builder, ≈ 1 µs) and hands
whole batches to the producer: one future per batch, awaited together.

The records of a topic-partition keep the order they were added in. The partition of a
keyed record is Kafka's default (murmur2 of the key, as :func:`partition_for`), so a
consumer sees the same partitioning as from ``send``; a record without a key goes to the
partitions in turn.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

__all__ = ["BATCH_BYTES", "Outbox", "Partitioner", "partition_for", "shared_partitioner"]

#: Bytes a record batch holds at most (the first record of a batch always fits). Below
#: Kafka's default ``message.max.bytes`` (1 MiB) with room for the batch's own framing.
BATCH_BYTES = 512 * 1024

Headers = list[tuple[str, bytes]]
_NO_HEADERS: Headers = []  # aiokafka's record builder takes a list (it only reads it)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2, as the Java and Python clients)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Partitioner:
    """Kafka's default partition of each key, remembered (murmur2 in Python costs ≈ 3 µs)."""

    def __init__(self, partitions: int, max_keys: int = 200_000) -> None:
        self.partitions = partitions
        self.max_keys = max_keys
        self._of: dict[bytes, int] = {}
        self._turn = itertools.count()

    def __call__(self, key: bytes | None) -> int:
        if key is None:
            return next(self._turn) % self.partitions
        p = self._of.get(key)
        if p is None:
            if len(self._of) >= self.max_keys:
                self._of.clear()
            p = self._of[key] = partition_for(key, self.partitions)
        return p


_PARTITIONERS: dict[int, Partitioner] = {}  # per partition count


def shared_partitioner(partitions: int) -> Partitioner:
    """The process's :class:`Partitioner` for ``partitions``: a key's partition depends on
    the key and the count alone, so a site's is hashed once for its table, its aggregates
    and its re-keyed messages."""
    got = _PARTITIONERS.get(partitions)
    if got is None:
        got = _PARTITIONERS[partitions] = Partitioner(partitions)
    return got


class Outbox:
    """Records to send, in the order added (the order Kafka keeps per partition).

    :meth:`send` returns once Kafka has acknowledged every record (with the producer's
    ``acks``; the app uses ``acks=all``). A failed send raises (aiokafka's ``KafkaError``):
    the caller retries the whole outbox, as it would a failed ``send``.
    """

    __slots__ = ("app", "records")

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: dict[str, list[tuple[int | None, bytes | None, bytes | None,
                                           Headers]]] = {}

    def __len__(self) -> int:
        return sum(map(len, self.records.values()))

    def add(self, topic: str, key: bytes | None, value: bytes | None,
            headers: Headers = _NO_HEADERS,
            partition: int | None = None) -> None:
        """One record (``value`` None: a tombstone), to ``partition`` or, when None, to
        Kafka's default partition for ``key``."""
        got = self.records.get(topic)
        if got is None:
            got = self.records[topic] = []
        got.append((partition, key, value, headers))

    async def send(self, *, last_alone: bool = False) -> None:
        """Send every record and wait until Kafka holds them all.

        ``last_alone``: the last record of each topic-partition is sent in a batch of its
        own, after the others are acknowledged. A broker whose end offset is the last
        record *batch*'s first offset + 1 (Tansu, the local stack's) would otherwise hide
        the tail of that batch from a reader that stops at the end offset (a table's
        recovery).
        """
        producer = self.app.producer._ensure_producer()  # aiokafka's AIOKafkaProducer
        runs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, Headers]]] = {}
        for topic, recs in self.records.items():
            part: Partitioner | None = None
            for p, key, value, headers in recs:
                if p is None:
                    if part is None:
                        n = len(await producer.client._wait_on_metadata(topic))
                        part = shared_partitioner(n)
                    p = part(key)
                run = runs.get((topic, p))
                if run is None:
                    run = runs[(topic, p)] = []
                run.append((key, value, headers))
        if not last_alone:
            await _send_runs(producer, runs)
            return
        await _send_runs(producer, {tp: run[:-1] for tp, run in runs.items() if len(run) > 1})
        await _send_runs(producer, {tp: run[-1:] for tp, run in runs.items()})


async def _send_runs(producer: Any, runs: dict[tuple[str, int], list[Any]]) -> None:
    """Each topic-partition's records as few batches as fit, then await them all."""
    futures = []
    compression = producer._message_accumulator._compression_type  # the batch attributes
    for (topic, partition), recs in runs.items():
        batch = BatchBuilder(BATCH_BYTES, compression)
        count = 0
        for key, value, headers in recs:
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = BatchBuilder(BATCH_BYTES, compression)
                batch.append(timestamp=None, key=key, value=value, headers=headers)
                count = 0  # the first record of a batch always fits
            count += 1
        if count:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    if futures:
        await asyncio.gather(*futures)
