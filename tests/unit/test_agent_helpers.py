"""The agents' helpers: the batch lane (agents/lane.py) with a fake app, the notifier's
acknowledgement gate, the sink's cancellation, and the quiet-site clock."""

from __future__ import annotations

import asyncio
import contextlib
import types
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from thurrock_streams.agents.lane import Lane, Take
from thurrock_streams.settings import Settings


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    headers: Any = ()


def fake_app(generation: int = 1) -> Any:
    """What a lane reads of Faust's app."""
    return types.SimpleNamespace(consumer_generation_id=generation, rebalancing=False,
                                 tables=types.SimpleNamespace(actives_ready=True),
                                 monitor=None)


TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


def recs(tp: TopicPartition, first: int, last: int) -> list[Rec]:
    return [Rec(tp.topic, tp.partition, o) for o in range(first, last + 1)]


def assigned_lane(starts: dict[TopicPartition, int], **kw: Any) -> Lane:
    lane = Lane(fake_app(), "test", ["t"], **kw)
    lane.assign(starts)
    lane.start(lane.epoch, starts)
    return lane


async def take_one(lane: Lane) -> Take:
    it = lane.takes(10_000).__aiter__()
    return await asyncio.wait_for(it.__anext__(), 1.0)


def test_a_lane_hands_over_whole_batches_from_the_offset_due_only() -> None:
    """The first batch must start at the committed offset: one starting past it is dropped
    and the partition sought back; offsets below it (handed over again) are dropped."""
    lane = assigned_lane({TP0: 10, TP1: 0})
    assert lane.offer(TP0, recs(TP0, 12, 20), 1, (21, 0.0)) == 10  # 10, 11 missing: seek
    assert lane.offer(TP0, recs(TP0, 5, 14), 1, (21, 0.0)) is None  # 5..9 processed before
    assert lane.offer(TP0, recs(TP0, 13, 16), 1, (21, 0.0)) is None  # 13, 14 again
    assert lane.offer(TP1, recs(TP1, 0, 2), 1, (3, 0.0)) is None
    assert lane.counts.rewinds == 1 and lane.counts.duplicates == 5 + 2

    async def main() -> Take:
        return await take_one(lane)

    take = asyncio.run(main())
    assert [(m.partition, m.offset) for m in take.messages] == (
        [(0, o) for o in range(10, 17)] + [(1, 0), (1, 1), (1, 2)])
    assert take.ends == {TP0: 17, TP1: 3}


def test_offsets_are_committable_only_after_the_step_and_a_failed_step_is_fetched_again(
) -> None:
    lane = assigned_lane({TP0: 0})
    seen: list[int] = []

    async def ok(messages: list[Any]) -> None:
        # nothing of the step is committable during it
        assert lane.committable() == {TP0: messages[0].offset}
        seen.extend(m.offset for m in messages)

    async def fails(messages: list[Any]) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        lane.offer(TP0, recs(TP0, 0, 4), 1, None)
        assert await lane.run(await take_one(lane), ok)
        assert lane.committable() == {TP0: 5} and lane.processed("t", 0) == 5
        lane.offer(TP0, recs(TP0, 5, 9), 1, None)
        lane.offer(TP0, recs(TP0, 10, 12), 1, None)
        it = lane.takes(5).__aiter__()
        with pytest.raises(RuntimeError):
            await lane.run(await it.__anext__(), fails)
        # not committable; the queued rest dropped; the partition sought back to 5
        assert lane.committable() == {TP0: 5} and lane.seeks == {TP0: 5}
        assert lane.offer(TP0, recs(TP0, 5, 6), 1, None) is None
        assert await lane.run(await take_one(lane), ok)

    asyncio.run(main())
    assert seen == [0, 1, 2, 3, 4, 5, 6]
    assert lane.committable() == {TP0: 7}


def test_stale_batches_are_dropped_and_fetched_again() -> None:
    """Fetched in an earlier generation or while the tables recover: not queued, and the
    partition is sought back to the offset due; taken before a new assignment: not run."""
    lane = assigned_lane({TP0: 3})
    assert lane.offer(TP0, recs(TP0, 3, 5), 0, None) == 3  # generation 0, now 1
    lane.app.tables.actives_ready = False
    assert lane.offer(TP0, recs(TP0, 3, 5), 1, None) == 3
    lane.app.tables.actives_ready = True
    assert lane.offer(TP0, recs(TP0, 3, 5), 1, None) is None
    ran: list[Any] = []

    async def step(messages: list[Any]) -> None:
        ran.append(messages)

    async def main() -> None:
        take = await take_one(lane)
        lane.assign({TP0})  # a rebalance in between
        assert not await lane.run(take, step)

    asyncio.run(main())
    assert ran == [] and lane.counts.stale_batches == 3
    assert lane.processed("t", 0) is None  # the new assignment's start is not known yet


def test_a_revocation_waits_for_the_step_in_flight_and_drops_what_is_queued() -> None:
    lane = assigned_lane({TP0: 0})
    order: list[str] = []
    release = asyncio.Event()

    async def step(messages: list[Any]) -> None:
        await release.wait()
        order.append("step done")

    async def main() -> None:
        lane.offer(TP0, recs(TP0, 0, 1), 1, None)
        take = await take_one(lane)
        lane.offer(TP0, recs(TP0, 2, 3), 1, None)  # queued behind it
        running = asyncio.ensure_future(lane.run(take, step))
        await asyncio.sleep(0.01)
        revoking = asyncio.ensure_future(lane.revoke())
        await asyncio.sleep(0.01)
        assert not revoking.done()
        release.set()
        await revoking
        order.append("revoked")
        assert lane.committable() == {TP0: 2}  # committed at the revocation, by Faust
        lane.forget()
        assert await running

    asyncio.run(main())
    assert order == ["step done", "revoked"]
    assert lane.committable() == {}
    assert lane.offer(TP0, recs(TP0, 2, 3), 1, None) is None and lane.counts.stale_batches == 1


def test_a_full_lane_says_so_until_the_agent_takes_its_batches() -> None:
    lane = assigned_lane({TP0: 0}, max_messages=3)
    lane.offer(TP0, recs(TP0, 0, 2), 1, None)
    assert lane.full

    async def main() -> None:
        await take_one(lane)

    asyncio.run(main())
    assert not lane.full


def test_the_high_watermark_is_the_last_fetchs() -> None:
    lane = assigned_lane({TP0: 0})
    assert lane.high("t", 0) is None
    lane.note_high(TP0, (7, 1000.0))
    assert lane.high("t", 0) == (7, 1000.0)
    lane.offer(TP0, recs(TP0, 0, 8), 1, (9, 2000.0))
    assert lane.high("t", 0) == (9, 2000.0) and lane.high("t", 1) is None


def test_a_topic_has_one_lane_per_agent() -> None:
    app = fake_app()
    Lane(app, "a", ["t"])
    Lane(app, "b", ["t"])
    with pytest.raises(ValueError, match="already has a lane named a"):
        Lane(app, "a", ["t"])


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


def test_the_notifier_acknowledges_each_partition_in_offset_order() -> None:
    """An event delivered before an earlier one of its partition waits for it (a commit
    would otherwise pass the earlier one); other partitions are independent; an
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
    """None of them is acknowledged; a delivery finishing afterwards acknowledges
    nothing; the dispatcher sees them withdrawn."""
    agent, done = _notifier()
    acked: list[int] = []
    for o in (1, 2):
        agent.submit(Rec("alerts", 0, o, value=b"{}"), lambda o=o: acked.append(o))
    assert [withdrawn() for _, withdrawn in done] == [False, False]
    agent.release_all()
    assert (acked, agent.withdrawn, len(agent.gate)) == ([], 2, 0)
    assert [withdrawn() for _, withdrawn in done] == [True, True]
    done[0][0]()
    done[1][0]()
    assert acked == []



def test_a_cancelled_sink_marks_its_batch_committable_only_after_writing_it() -> None:
    """A worker stopping during a store outage cancels the sink mid-write: the write runs
    on to its end before the offsets are committable, and the cancellation then ends it."""
    from thurrock_streams.adapters.influx import InfluxWriter
    from thurrock_streams.agents.sink import SinkAgent

    log: list[str] = []
    store_back = asyncio.Event()

    async def write(messages: list[Any]) -> None:
        await store_back.wait()  # the store is down until the test brings it back
        log.append("written")

    sink = object.__new__(SinkAgent)
    sink.settings = Settings(sink_batch_size=10)
    sink.writer = InfluxWriter(sink.settings, post=write)  # opened at start: no client here
    sink.lane = assigned_lane({TopicPartition("t", 0): 0})
    sink.write_messages = write  # type: ignore[method-assign]
    tp = TopicPartition("t", 0)

    async def main() -> None:
        sink.lane.offer(tp, recs(tp, 0, 0), 1, None)
        task = asyncio.ensure_future(sink._run(None))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        assert log == [] and sink.lane.committable() == {tp: 0}
        store_back.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == ["written"]
    assert sink.lane.committable() == {tp: 1}


def test_quiet_time_counts_only_up_to_what_was_processed() -> None:
    """Silence is counted up to the newest moment whose Kafka contents were processed:
    a backlog or a stalled fetch (no note) is no silence, a partition busy with other
    sites is (it keeps getting processed), a takeover starts again, and the oldest cut
    of the worker's partitions counts (a reading waiting elsewhere under a wrong key)."""
    from thurrock_streams.agents.readings import QuietClock

    q = QuietClock(idle_s=60.0)
    q.reset(0.0)
    q.heard("a", 0.0)
    tp, other = ("traffic.readings", 0), ("traffic.readings", 1)
    for t in range(1, 101):  # partition 0 busy with others: always behind by one second
        q.note(0, float(t), {tp: 10 * t})
        q.processed(0, {tp: 10 * (t - 1)})
        q.note(1, float(t), {other: 5})
        q.processed(1, {other: 5})
    assert q.quiet_s("a", [0, 1]) == 99.0 and q.quiet_sites([0, 1]) == 1
    # a backlog on partition 1: no cut past t = 100 until it is processed
    for t in range(101, 161):
        q.note(1, float(t), {other: 500})
        q.processed(1, {other: 6})
        q.note(0, float(t), {tp: 10 * t})
        q.processed(0, {tp: 10 * t})
    assert q.quiet_s("a", [0, 1]) == 100.0
    assert q.quiet_s("a", [0]) == 160.0
    q.processed(1, {other: 500})
    assert q.quiet_s("a", [0, 1]) == 160.0
    q.heard("a", 161.0)
    assert q.quiet_s("a", [0, 1]) == 0.0
    q.reset(200.0)
    assert q.quiet_s("a", [0, 1]) == 0.0 and q.quiet_sites([0, 1]) == 0


def test_between_a_withdrawal_and_the_next_assignment_nothing_is_taken_or_acknowledged() -> None:
    """An event handed in after the gate closed is neither delivered nor acknowledged;
    after the next assignment it is delivered again."""
    agent, done = _notifier()
    acked: list[str] = []
    agent.submit(Rec("alerts", 0, 5, value=b"{}"), lambda: acked.append("first"))
    agent.release_all()
    assert (acked, agent.withdrawn, len(done)) == ([], 1, 1)
    agent.submit(Rec("alerts", 0, 6, value=b"{}"), lambda: acked.append("late"))
    assert (acked, len(done), len(agent.gate)) == ([], 1, 0)
    agent.gate.reopen()
    agent.submit(Rec("alerts", 0, 6, value=b"{}"), lambda: acked.append("again"))
    done[-1][0]()
    assert acked == ["again"]


def test_silence_counted_before_a_rebalance_is_kept_for_the_partitions_that_stay() -> None:
    from thurrock_streams.agents.readings import QuietClock

    def clock() -> QuietClock:
        q = QuietClock(idle_s=60.0)
        q.reset(0.0)
        q.heard("a", 0.0)
        q.note(0, 100.0, {("t", 0): 1})
        q.processed(0, {("t", 0): 1})
        q.reset(110.0)  # a rebalance: the 10 s until new notes count as no silence
        q.note(0, 140.0, {("t", 0): 1})
        q.processed(0, {("t", 0): 1})
        return q

    kept = clock()
    kept.keep(lambda site: True)
    assert kept.quiet_s("a", [0]) == 130.0  # 100 before + 30 after the takeover
    moved = clock()
    moved.keep(lambda site: False)  # its partition was elsewhere meanwhile
    assert moved.quiet_s("a", [0]) == 30.0


def test_a_topic_read_by_two_lanes_is_committed_as_far_as_both_processed_it() -> None:
    """The aggregates are read by the sink and the alert agent: the consumer commits a
    partition's offset only up to what the slower of its lanes processed."""
    from thurrock_streams.agents.lane import LaneConsumer

    app = fake_app()
    sink, alerts = Lane(app, "sink", ["t"]), Lane(app, "alerts", ["t"])
    for lane in (sink, alerts):
        lane.assign({TP0})
    consumer = types.SimpleNamespace(_lanes=app.lanes)
    assert LaneConsumer._new_offset(consumer, TP0) is None  # type: ignore[arg-type]
    sink.start(sink.epoch, {TP0: 4})
    assert LaneConsumer._new_offset(consumer, TP0) is None  # type: ignore[arg-type]
    alerts.start(alerts.epoch, {TP0: 4})
    sink.ack(TP0, 9, sink.epoch)
    alerts.ack(TP0, 6, alerts.epoch)
    assert LaneConsumer._new_offset(consumer, TP0) == 6  # type: ignore[arg-type]
    alerts.ack(TP0, 11, alerts.epoch)
    assert LaneConsumer._new_offset(consumer, TP0) == 9  # type: ignore[arg-type]
    alerts.ack(TP0, 20, alerts.epoch - 1)  # of an earlier assignment: ignored
    assert alerts.committable() == {TP0: 11}
