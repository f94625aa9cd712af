"""Delivery guards of the Faust agents (agents/delivery.py), with a fake Kafka reader."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust
import faust.streams
from faust.types.tuples import ConsumerMessage

from thurrock_streams.agents.delivery import Event, OffsetGuard, unstarted_events


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    headers: Any = ()


@dataclass
class FakeReader:
    """A partition log per (topic, partition), committed offsets, and a record of calls."""

    committed_at: dict[tuple[str, int], int]
    logs: dict[tuple[str, int], int]  # end offset: offsets 0..end-1 exist
    deleted_below: int = 0
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def committed(self, topic: str, partition: int) -> int | None:
        self.calls.append(("committed", topic, partition))
        return self.committed_at.get((topic, partition))

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        self.calls.append(("read", topic, partition, first, last))
        end = self.logs[(topic, partition)]
        return [Rec(topic, partition, o) for o in range(max(first, self.deleted_below),
                                                        min(last + 1, end))]


def offsets(batch: list[Any]) -> list[tuple[int, int]]:
    return [(m.partition, m.offset) for m in batch]


def run(guard: OffsetGuard, batch: list[Rec]) -> list[Any]:
    return asyncio.run(guard.complete(batch))


def test_a_dropped_message_is_read_back_into_its_place() -> None:
    reader = FakeReader({("r", 0): 5, ("r", 1): 0}, {("r", 0): 100, ("r", 1): 100})
    guard = OffsetGuard("t", reader)
    batch = [Rec("r", 0, 5), Rec("r", 0, 6), Rec("r", 1, 0), Rec("r", 0, 9), Rec("r", 1, 1)]
    out = run(guard, batch)
    assert offsets(out) == [(0, 5), (0, 6), (1, 0), (0, 7), (0, 8), (0, 9), (1, 1)]
    assert (guard.repaired, guard.missed) == (2, 0)
    # the committed offset is asked once per partition since the takeover
    assert [c for c in reader.calls if c[0] == "committed"] == [("committed", "r", 0),
                                                                ("committed", "r", 1)]
    assert guard.expected == {("r", 0): 10, ("r", 1): 2}


def test_a_first_message_past_the_committed_offset_brings_the_skipped_ones() -> None:
    reader = FakeReader({("r", 0): 155}, {("r", 0): 200})
    guard = OffsetGuard("t", reader)
    assert offsets(run(guard, [Rec("r", 0, 156), Rec("r", 0, 157)])) == [
        (0, 155), (0, 156), (0, 157)]
    assert guard.repaired == 1


def test_replays_pass_unchanged_and_nothing_is_read_without_a_gap() -> None:
    reader = FakeReader({("r", 0): 10}, {("r", 0): 100})
    guard = OffsetGuard("t", reader)
    batch = [Rec("r", 0, 8), Rec("r", 0, 9), Rec("r", 0, 10), Rec("r", 0, 9), Rec("r", 0, 11)]
    assert offsets(run(guard, batch)) == offsets(batch)
    assert not [c for c in reader.calls if c[0] == "read"]
    assert (guard.repaired, guard.missed) == (0, 0)


def test_a_group_without_a_committed_offset_starts_at_the_first_message() -> None:
    reader = FakeReader({}, {("r", 0): 100})
    guard = OffsetGuard("t", reader)
    assert offsets(run(guard, [Rec("r", 0, 40), Rec("r", 0, 42)])) == [(0, 40), (0, 41),
                                                                        (0, 42)]
    assert [c for c in reader.calls if c[0] == "committed"] == [("committed", "r", 0)]


def test_reset_asks_for_the_committed_offset_again() -> None:
    reader = FakeReader({("r", 0): 3}, {("r", 0): 100})
    guard = OffsetGuard("t", reader)
    run(guard, [Rec("r", 0, 3)])
    guard.reset()
    reader.committed_at[("r", 0)] = 50
    assert offsets(run(guard, [Rec("r", 0, 52)])) == [(0, 50), (0, 51), (0, 52)]


def test_offsets_kafka_no_longer_holds_are_counted_as_missed() -> None:
    reader = FakeReader({("r", 0): 0}, {("r", 0): 100}, deleted_below=4)
    guard = OffsetGuard("t", reader)
    assert offsets(run(guard, [Rec("r", 0, 6)])) == [(0, 4), (0, 5), (0, 6)]
    assert (guard.repaired, guard.missed) == (2, 4)


def test_done_acknowledges_only_the_repaired_messages() -> None:
    acked: list[int] = []
    guard = OffsetGuard("t", FakeReader({}, {}), ack=lambda m: acked.append(m.offset))
    from_faust = ConsumerMessage("r", 0, 9, 0.0, 0, None, b"k", b"v", None)
    guard.done([Rec("r", 0, 7), Rec("r", 0, 8), from_faust])
    assert acked == [7, 8]


def test_an_event_no_stream_started_is_not_acknowledged(monkeypatch: Any) -> None:
    """Faust's pure-Python stream loop acks the events it drops at a rebalance; those
    events were never tracked (taken by a stream), so :class:`Event` refuses the ack."""

    async def main() -> tuple[list[int], list[int], int]:
        app = faust.App("t-unit-ack", broker="kafka://127.0.0.1:1", Event=Event)
        app.topics._acking_topics.add("r")
        acked: list[int] = []
        app.consumer.ack = lambda m: acked.append(m.offset) or True  # type: ignore[method-assign]
        app.consumer_generation_id = 2
        app.flow_control.resume()
        channel = app.channel()
        stream = app.stream(channel)
        seen: list[int] = []

        async def consume() -> None:
            async for ev in stream.noack().events():
                seen.append(ev.message.offset)
                ev.ack()
                return

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.2)
        before = unstarted_events.value
        # offset 5 was fetched in generation 1 (before a rebalance): Faust drops it
        for offset, generation in ((5, 1), (6, 2)):
            m = ConsumerMessage("r", 0, offset, 0.0, 0, None, b"k", b"v", None,
                                generation_id=generation)
            m.incref()
            await channel.put(Event(app, b"k", b"v", None, m))
        await asyncio.wait_for(task, 10)
        return seen, acked, unstarted_events.value - before

    monkeypatch.setattr(faust.streams, "_CStreamIterator", None)  # the pure-Python loop
    seen, acked, refused = asyncio.run(main())
    assert seen == [6]
    assert acked == [6]
    assert refused == 1
