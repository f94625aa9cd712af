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
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

__all__ = ["BATCH_BYTES", "Outbox", "Partitioner", "murmur2_many", "partition_for",
           "send_records", "shared_partitioner"]

#: Bytes a record batch holds at most (the first record of a batch always fits). Below
#: Kafka's default ``message.max.bytes`` (1 MiB) with room for the batch's own framing.
BATCH_BYTES = 512 * 1024

Headers = list[tuple[str, bytes]]
_NO_HEADERS: Headers = []  # aiokafka's record builder takes a list (it only reads it)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2, as the Java and Python clients)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = np.uint32(0x5BD1E995)  # murmur2's mixing constant
_SEED = 0x9747B28C


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """murmur2 of each key (unsigned 32-bit, as :func:`aiokafka.partitioner.murmur2`), with
    numpy: the keys of one length hashed together, a few array operations per 4 bytes of
    key instead of ≈ 3 µs of Python per key.

    >>> from aiokafka.partitioner import murmur2
    >>> keys = [b"", b"a", b"ab", b"abc", b"A13-eb-0001", b"M25-J30-cw"]
    >>> murmur2_many(keys).tolist() == [murmur2(k) for k in keys]
    True
    """
    out = np.empty(len(keys), dtype=np.uint32)
    by_len: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        got = by_len.get(len(k))
        if got is None:
            by_len[len(k)] = [i]
        else:
            got.append(i)
    with np.errstate(over="ignore"):  # uint32 arithmetic wraps, as the algorithm's & 0xFFFFFFFF
        for length, idx in by_len.items():
            h = np.full(len(idx), (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
            data = np.frombuffer(b"".join([keys[i] for i in idx]),
                                 dtype=np.uint8).reshape(len(idx), length)
            whole = length // 4
            if whole:
                words = np.ascontiguousarray(data[:, :4 * whole]).view("<u4")
                for j in range(whole):
                    mix = words[:, j] * _M
                    mix ^= mix >> np.uint32(24)
                    mix *= _M
                    h *= _M
                    h ^= mix
            tail, at = length % 4, length & ~3
            if tail >= 3:
                h ^= data[:, at + 2].astype(np.uint32) << np.uint32(16)
            if tail >= 2:
                h ^= data[:, at + 1].astype(np.uint32) << np.uint32(8)
            if tail >= 1:
                h ^= data[:, at].astype(np.uint32)
                h *= _M
            h ^= h >> np.uint32(13)
            h *= _M
            h ^= h >> np.uint32(15)
            out[idx] = h
    return out


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

    def many(self, keys: Sequence[bytes]) -> list[int]:
        """The partition of each key, as :meth:`__call__`; the keys not seen before are
        hashed together (:func:`murmur2_many`)."""
        of = self._of
        distinct = dict.fromkeys(keys)
        new = [k for k in distinct if k not in of]
        if new:
            if len(of) + len(new) > self.max_keys:
                of.clear()  # as __call__ does, then every key of this call is new
                new = list(distinct)
            hashes = ((murmur2_many(new) & np.uint32(0x7FFFFFFF))
                      % np.uint32(self.partitions)).tolist()
            of.update(zip(new, hashes, strict=True))
        return [of[k] for k in keys]


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


async def send_records(app: Any, topic: str,
                       records: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) records to ``topic``, each to the producer's default partition
    for its key, as one :class:`Outbox`; return once Kafka holds them all."""
    box = Outbox(app)
    for key, value in records:
        box.add(topic, key, value)
    await box.send()


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
