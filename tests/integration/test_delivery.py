"""The offset guard against the real broker: committed offsets and dropped messages are read
back from Kafka (agents/delivery.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from thurrock_streams.agents.delivery import KafkaReader, OffsetGuard
from thurrock_streams.settings import Settings
from thurrock_streams.stack import StackConfig

from .harness import send

pytestmark = pytest.mark.integration


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[()] = ()


def test_dropped_messages_are_read_back_from_kafka_in_offset_order(stack: StackConfig) -> None:
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    group = f"guard-group-{uuid.uuid4().hex[:8]}"
    send(stack, topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(30)], partition=0)
    c = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group,
                      enable_auto_commit=False)
    c.assign([TopicPartition(topic, 0)])
    c.commit({TopicPartition(topic, 0): OffsetAndMetadata(12, None, -1)})
    c.close()

    async def main() -> tuple[int | None, int | None, list[tuple[int, bytes]], OffsetGuard]:
        reader = KafkaReader(Settings(kafka_bootstrap_servers=stack.bootstrap), group)
        try:
            committed = await reader.committed(topic, 0)
            other = await reader.committed(f"{topic}-none", 0)
            guard = OffsetGuard("test", reader)
            # the consumer handed over 14 and 17 first: 12, 13, 15 and 16 were dropped
            batch = [Rec(topic, 0, o, f"k{o}".encode(), f"v{o}".encode()) for o in (14, 17)]
            out = await guard.complete(batch)
            return committed, other, [(m.offset, m.value) for m in out], guard
        finally:
            await reader.close()

    committed, other, out, guard = asyncio.run(main())
    assert committed == 12
    assert other is None
    assert out == [(o, f"v{o}".encode()) for o in (12, 13, 14, 15, 16, 17)]
    assert (guard.repaired, guard.missed) == (4, 0)


def test_the_sweep_reads_what_the_consumer_never_handed_over(stack: StackConfig) -> None:
    topic = f"sweep-{uuid.uuid4().hex[:8]}"
    group = f"sweep-group-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    send(stack, topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(30)], partition=0)
    send(stack, topic, [(b"k", b"only")], partition=1)
    c = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group,
                      enable_auto_commit=False)
    c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    c.commit({TopicPartition(topic, 0): OffsetAndMetadata(20, None, -1),
              TopicPartition(topic, 1): OffsetAndMetadata(1, None, -1)})
    c.close()
    processed: list[list[tuple[int, int, bytes]]] = []

    async def process(batch: list[Any]) -> None:
        processed.append([(m.partition, m.offset, m.value) for m in batch])

    async def main() -> tuple[int, int, OffsetGuard]:
        reader = KafkaReader(Settings(kafka_bootstrap_servers=stack.bootstrap), group)
        try:
            guard = OffsetGuard("test", reader, idle_s=0.0, grace_s=0.0)
            owned = [(topic, 0), (topic, 1)]
            first = await guard.sweep(owned, process)
            again = await guard.sweep(owned, process)  # nothing new: nothing read
            return first, again, guard
        finally:
            await reader.close()

    first, again, guard = asyncio.run(main())
    # partition 0 from its committed offset 20 to its end; partition 1 is at its end
    assert (first, again) == (10, 0)
    assert processed == [[(0, o, f"v{o}".encode()) for o in range(20, 30)]]
    assert guard.counts() == {"repaired": 0, "swept": 10, "duplicates": 0, "missed": 0}
    assert guard.expected == {(topic, 0): 30}
    assert guard.starts == {(topic, 0): 20, (topic, 1): 1}
