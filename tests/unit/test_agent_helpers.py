"""Delivery guards of the Faust agents (agents/delivery.py), with a fake Kafka reader."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import faust.streams
from faust.types.tuples import ConsumerMessage

from thurrock_streams.agents.delivery import Event, OffsetGuard, unstarted_events
from thurrock_streams.settings import Settings


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
    batch: int = 1  # records per record batch: a read returns the rest of the last one
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def committed(self, topic: str, partition: int) -> int | None:
        self.calls.append(("committed", topic, partition))
        return self.committed_at.get((topic, partition))

    async def beginning(self, topic: str, partition: int) -> int:
        self.calls.append(("beginning", topic, partition))
        return self.deleted_below

    async def probe(self, starts: dict[tuple[str, int], int],
                    max_n: int) -> dict[tuple[str, int], list[Any]]:
        self.calls.append(("probe", dict(starts)))
        out = {tp: [Rec(*tp, o) for o in range(max(s, self.deleted_below),
                                               min(self.logs[tp], s + max_n))]
               for tp, s in starts.items()}
        return {tp: recs for tp, recs in out.items() if recs}

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        self.calls.append(("read", topic, partition, first, last))
        end = self.logs[(topic, partition)]
        upto = min((last // self.batch + 1) * self.batch, end)
        return [Rec(topic, partition, o) for o in range(max(first, self.deleted_below), upto)]


def faust_message(topic: str, partition: int, offset: int) -> ConsumerMessage:
    return ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"k", b"v", None)


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


def test_messages_handed_over_twice_are_dropped_and_nothing_is_read_without_a_gap() -> None:
    reader = FakeReader({("r", 0): 10}, {("r", 0): 100})
    guard = OffsetGuard("t", reader)
    # 8 and 9 precede the committed offset (processed before it was committed); the second
    # 9 and 10 were handed over before
    batch = [Rec("r", 0, 8), Rec("r", 0, 9), Rec("r", 0, 10), Rec("r", 0, 9), Rec("r", 0, 11),
             Rec("r", 0, 10)]
    assert offsets(run(guard, batch)) == [(0, 10), (0, 11)]
    assert (guard.duplicates, guard.repaired, guard.missed) == (4, 0, 0)
    assert not [c for c in reader.calls if c[0] == "read"]


def test_a_group_without_a_committed_offset_starts_at_the_partitions_first_offset() -> None:
    # where the consumer starts (auto_offset_reset="earliest")
    reader = FakeReader({}, {("r", 0): 100}, deleted_below=38)
    guard = OffsetGuard("t", reader)
    assert offsets(run(guard, [Rec("r", 0, 40), Rec("r", 0, 42)])) == [
        (0, 38), (0, 39), (0, 40), (0, 41), (0, 42)]
    assert [c[0] for c in reader.calls if c[0] != "read"] == ["committed", "beginning"]
    assert (guard.repaired, guard.missed) == (3, 0)


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


def test_a_read_keeps_only_the_skipped_offsets_of_a_record_batch() -> None:
    reader = FakeReader({("r", 0): 0}, {("r", 0): 100}, batch=10)
    guard = OffsetGuard("t", reader)
    assert offsets(run(guard, [Rec("r", 0, 3)])) == [(0, 0), (0, 1), (0, 2), (0, 3)]


class Sweep:
    """An agent's sweep with a clock of its own (monotonic s) and what it processed."""

    def __init__(self, reader: FakeReader, **kw: Any) -> None:
        self.now = 1000.0
        self.acked: list[int] = []
        self.processed: list[list[tuple[int, int]]] = []
        self.guard = OffsetGuard("t", reader, ack=lambda m: self.acked.append(m.offset), **kw)
        self.guard.reset()

    async def process(self, batch: list[Any]) -> None:
        self.processed.append(offsets(batch))

    def sweep(self, owned: list[tuple[str, int]]) -> int:
        return asyncio.run(self.guard.sweep(owned, self.process))

    def handle(self, batch: list[Any]) -> list[Any]:
        return asyncio.run(self.guard.handle(batch, self.process))


def test_the_sweep_reads_a_backlog_the_consumer_never_hands_over(monkeypatch: Any) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 0.0)
    reader = FakeReader({("r", 0): 5, ("r", 1): 7}, {("r", 0): 12, ("r", 1): 7})
    s = Sweep(reader, idle_s=5.0)
    owned = [("r", 0), ("r", 1)]
    monkeypatch.setattr(time, "monotonic", lambda: 4.9)
    assert s.sweep(owned) == 0 and reader.calls == []  # not idle long enough
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)
    # r[0] holds 5..11 past its committed offset; r[1] is at its end. They may have just
    # been written: a second look after the grace period takes them.
    assert s.sweep(owned) == 0
    monkeypatch.setattr(time, "monotonic", lambda: 9.9)
    assert s.sweep(owned) == 0
    monkeypatch.setattr(time, "monotonic", lambda: 10.0)
    assert s.sweep(owned) == 7
    assert s.processed == [[(0, o) for o in range(5, 12)]]
    assert s.acked == list(range(5, 12))
    assert s.guard.counts() == {"repaired": 0, "swept": 7, "duplicates": 0, "missed": 0}
    # what the consumer hands over after all is dropped; what follows passes
    assert offsets(s.handle([faust_message("r", 0, o) for o in (10, 11, 12)])) == [(0, 12)]
    assert s.guard.duplicates == 2
    assert s.acked == list(range(5, 12))  # Faust acks its own messages


def test_the_sweep_leaves_partitions_the_consumer_serves_alone(monkeypatch: Any) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 0.0)
    reader = FakeReader({("r", 0): 0, ("r", 1): 0}, {("r", 0): 50, ("r", 1): 50})
    s = Sweep(reader, idle_s=5.0, starved_s=30.0)
    owned = [("r", 0), ("r", 1)]
    for t in range(0, 30, 2):  # r[0] arrives every 2 s; r[1] never
        monkeypatch.setattr(time, "monotonic", lambda t=t: float(t))
        s.handle([faust_message("r", 0, t // 2)])
        assert s.sweep(owned) == 0  # the agent is busy: r[1] is not starved yet
    monkeypatch.setattr(time, "monotonic", lambda: 30.0)
    assert s.sweep(owned) == 0  # r[1] silent for 30 s while Kafka holds 0..49: seen
    monkeypatch.setattr(time, "monotonic", lambda: 35.0)
    assert s.sweep(owned) == 50  # and still there 5 s later
    assert s.processed[-1] == [(1, o) for o in range(50)]


def test_a_partition_found_at_its_end_is_asked_again_after_a_doubling_pause(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 0.0)
    reader = FakeReader({("r", 0): 4}, {("r", 0): 4})
    s = Sweep(reader, idle_s=10.0, max_pause_s=40.0)
    asked = []
    for t in range(10, 200, 2):
        monkeypatch.setattr(time, "monotonic", lambda t=t: float(t))
        calls = len(reader.calls)
        s.sweep([("r", 0)])
        if any(c[0] == "probe" for c in reader.calls[calls:]):
            asked.append(t)
    # pauses of 10, 20, 40, 40, ... s; the committed offset is asked once
    assert asked == [10, 20, 40, 80, 120, 160]
    assert [c[0] for c in reader.calls].count("committed") == 1
    # a message from the consumer ends the pause: the next silence is swept on time
    monkeypatch.setattr(time, "monotonic", lambda: 200.0)
    s.handle([faust_message("r", 0, 4)])
    reader.logs[("r", 0)] = 7
    monkeypatch.setattr(time, "monotonic", lambda: 210.0)
    assert s.sweep([("r", 0)]) == 0
    monkeypatch.setattr(time, "monotonic", lambda: 215.0)
    assert s.sweep([("r", 0)]) == 2
    assert s.processed[-1] == [(0, 5), (0, 6)]


def sweep_with(monkeypatch: Any, meanwhile: Callable[[Sweep], Awaitable[Any]]) -> Sweep:
    """A sweep of r[0] (offsets 0..4 waiting, silent since the takeover) during whose read
    from Kafka ``meanwhile`` happens."""
    monkeypatch.setattr(time, "monotonic", lambda: 50.0)
    reader = FakeReader({("r", 0): 0}, {("r", 0): 5})
    s = Sweep(reader, idle_s=10.0, grace_s=0.0)
    s.guard.assigned_at = s.guard.active_at = 0.0
    probe = reader.probe

    async def probe_and_meanwhile(starts: Any, max_n: int) -> Any:
        got = await probe(starts, max_n)
        await meanwhile(s)
        return got

    reader.probe = probe_and_meanwhile  # type: ignore[method-assign]
    assert s.sweep([("r", 0)]) == 0
    return s


def test_a_partition_the_consumer_serves_during_the_sweep_is_left_to_it(
        monkeypatch: Any) -> None:
    s = sweep_with(monkeypatch, lambda s: s.guard.handle([faust_message("r", 0, 0)], s.process))
    assert s.processed == [[(0, 0)]]  # only what the consumer handed over
    assert s.guard.swept == 0


def test_a_sweep_overtaken_by_a_new_assignment_processes_nothing(monkeypatch: Any) -> None:
    async def rebalance(s: Sweep) -> None:
        s.guard.reset()  # the partition may now be another worker's

    s = sweep_with(monkeypatch, rebalance)
    assert s.processed == [] and s.guard.swept == 0


def test_the_sweep_waits_while_the_agent_processes_a_batch(monkeypatch: Any) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 100.0)
    reader = FakeReader({("r", 0): 0}, {("r", 0): 3})
    s = Sweep(reader)

    async def main() -> int:
        async with s.guard.lock:
            return await s.guard.sweep([("r", 0)], s.process)

    assert asyncio.run(main()) == 0 and reader.calls == []


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


def _notifier() -> tuple[Any, list[Any]]:
    from thurrock_streams.agents.alerts import AckGate, NotifyAgent

    done: list[Any] = []

    class Dispatcher:
        def submit(self, rec: Any, on_done: Any, withdrawn: Any = None) -> None:
            done.append((on_done, withdrawn))

    agent = NotifyAgent.__new__(NotifyAgent)
    agent.dispatcher = Dispatcher()  # type: ignore[assignment]
    agent.gate = AckGate()
    agent.withdrawn = 0
    return agent, done


def test_the_notifier_acks_a_copy_handed_over_again_only_once_the_first_is_delivered() -> None:
    agent, done = _notifier()
    acked: list[str] = []
    first = Rec("alerts", 1, 7, value=b'{"state": "raised"}')
    agent.submit(first, lambda: acked.append("first"))
    agent._ack_with(Rec("alerts", 1, 7), lambda: acked.append("copy"))
    agent._ack_with(Rec("alerts", 1, 8), lambda: acked.append("other"))  # none waiting
    assert acked == ["other"]
    done[0][0]()  # every notifier has the first copy
    assert acked == ["other", "first", "copy"]
    assert len(agent.gate) == 0


def test_the_notifier_acknowledges_each_partition_in_offset_order() -> None:
    """An event delivered before an earlier one of its partition waits for it (Faust
    would otherwise commit past the earlier one); other partitions are independent; an
    unreadable event is acknowledged in its turn."""
    agent, done = _notifier()
    acked: list[tuple[int, int]] = []
    for p, o in ((0, 5), (0, 6), (1, 3)):
        agent.submit(Rec("alerts", p, o, value=b"{}"), lambda p=p, o=o: acked.append((p, o)))
    agent.submit(Rec("alerts", 0, 7, value=b"not json"), lambda: acked.append((0, 7)))
    done[1][0]()  # (0, 6) delivered first
    done[2][0]()  # (1, 3)
    assert acked == [(1, 3)]
    done[0][0]()  # (0, 5): it, then 6 and the unreadable 7
    assert acked == [(1, 3), (0, 5), (0, 6), (0, 7)]


def test_a_rebalance_withdraws_undelivered_events_without_acknowledging_them() -> None:
    """Faust stops waiting for them (released) but commits none; a delivery finishing
    afterwards acknowledges nothing; the dispatcher sees them withdrawn."""
    agent, done = _notifier()
    acked: list[int] = []
    released: list[int] = []
    for o in (1, 2):
        agent.submit(Rec("alerts", 0, o, value=b"{}"), lambda o=o: acked.append(o),
                     lambda o=o: released.append(o))
    agent.release_all()
    assert (acked, sorted(released), agent.withdrawn, len(agent.gate)) == ([], [1, 2], 2, 0)
    assert [withdrawn() for _, withdrawn in done] == [True, True]
    done[0][0]()
    assert acked == []



class _TakeEvents:
    """Faust's ``Stream.take_events`` as far as acks go: a batch is acknowledged when the
    agent's loop body ends, by an exception or a cancellation too (streams.py, finally)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def take_events(self, n: int, within: float) -> Any:
        try:
            yield [types.SimpleNamespace(message=faust_message("traffic.aggregates", 0, 0))]
            await asyncio.sleep(3600)
        finally:
            self.log.append("acked")


def test_a_cancelled_sink_acknowledges_its_batch_only_after_writing_it() -> None:
    """A worker stopping during a store outage cancels the sink mid-write: the write runs
    on to its end before the batch is acknowledged (Faust may commit what is acked)."""
    from thurrock_streams.agents.sink import SinkAgent

    log: list[str] = []
    store_back = asyncio.Event()

    class Guard:
        async def handle(self, batch: list[Any], process: Any) -> list[Any]:
            await process(batch)
            return batch

    async def write(messages: list[Any]) -> None:
        await store_back.wait()  # the store is down until the test brings it back
        log.append("written")

    sink = object.__new__(SinkAgent)
    sink.settings = Settings(sink_batch_size=10)
    sink.offsets = Guard()  # type: ignore[assignment]
    sink.write_messages = write  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.ensure_future(sink._run(_TakeEvents(log)))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        assert log == []  # neither written nor acknowledged while the store is down
        store_back.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == ["written", "acked"]


def test_quiet_time_counts_only_while_the_partition_is_caught_up() -> None:
    """A backlog (not caught up), a pause (tables not ready) or a takeover is no
    silence; a site that sends starts its quiet time again."""
    from thurrock_streams.agents.readings import QuietClock

    q = QuietClock(idle_s=60.0)
    q.tick(0.0, {0})
    q.heard("a", 0)
    for t in range(1, 41):
        q.tick(float(t), {0})  # caught up for 40 s
    for t in range(41, 101):
        q.tick(float(t), set())  # 60 s of backlog: not counted
    assert q.quiet_s("a", 0) is None
    for t in range(101, 121):
        q.tick(float(t), {0})
    assert q.quiet_s("a", 0) == 60.0 and q.quiet_sites() == 1
    q.pause()
    q.tick(500.0, {0})  # the gap after a pause does not count
    assert q.quiet_s("a", 0) == 60.0
    q.tick(530.0, {0})  # ticks far apart count at most max_step_s
    assert q.quiet_s("a", 0) == 62.0
    q.heard("a", 0)
    assert q.quiet_s("a", 0) is None
    q.reset()
    assert q.quiet_s("a", 0) is None and q.quiet_sites() == 0
