"""The offset guard against the real broker: committed offsets and dropped messages are read
back from Kafka (agents/delivery.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from kafka import KafkaConsumer, TopicPartition
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
