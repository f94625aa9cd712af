"""The batch lanes' guarantees against the real broker and faust-streaming 0.15.3
(agents/lane.py): each partition starts at the group's committed offset, every offset
is processed once, in whole fetched batches, and a rebalance hands partitions over at
the offsets the first worker committed when it gave them up.

The source messages are unreadable (not JSON): the traffic agent dead-letters each one
with its topic, partition and offset, so the dead-letter topic says exactly which source
offsets were processed, and how often.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from thurrock_streams.stack import StackConfig

from .harness import consume_all, export, poll, send, wait_both_assigned, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4  # the worker's default (THURROCK_TOPIC_PARTITIONS)


def junk(stack: StackConfig, topic: str, counts: dict[int, int]) -> None:
    """``counts[p]`` unreadable messages into partition p of a new topic."""
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)  # the worker's partitions
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    for p, n in counts.items():
        send(stack, topic, [(f"k{p}-{i}".encode(), f"junk {p} {i}".encode())
                            for i in range(n)], partition=p)


def commit(stack: StackConfig, group: str, topic: str, offsets: dict[int, int]) -> None:
    c = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group,
                      enable_auto_commit=False)
    tps = {p: TopicPartition(topic, p) for p in offsets}
    c.assign(list(tps.values()))
    c.commit({tps[p]: OffsetAndMetadata(o, None, -1) for p, o in offsets.items()})
    c.close()


def dead_offsets(stack: StackConfig, prefix: str, expect: int) -> Counter[tuple[int, int]]:
    """How often each (partition, offset) of the readings topic was dead-lettered."""
    recs = consume_all(stack, f"{prefix}readings.deadletter", expect, timeout=90)
    out: Counter[tuple[int, int]] = Counter()
    for r in recs:
        d = json.loads(r.value)
        if d["topic"] == f"{prefix}traffic.readings":
            out[(d["partition"], d["offset"])] += 1
    return out


def test_each_partition_starts_at_its_committed_offset_and_every_offset_is_processed_once(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    topic = f"{prefix}traffic.readings"
    counts = {0: 300, 1: 50, 2: 40, 3: 0}
    junk(stack, topic, counts)
    # partition 0 was processed up to 120; 1 explicitly committed at 0 (aiokafka does not
    # seek to a committed 0); 2 has no commit (its first offset); 3 is empty
    commit(stack, f"{prefix}app", topic, {0: 120, 1: 0})
    want = Counter({(0, o): 1 for o in range(120, 300)} | {(1, o): 1 for o in range(50)}
                   | {(2, o): 1 for o in range(40)})
    worker = make_worker()
    got = dead_offsets(stack, prefix, sum(want.values()))
    assert got == want
    lane = wait_for(lambda: (c := worker.counters()["lanes"]["traffic"])["messages"] == 270
                    and c, 30, "the lane's counters")
    # whole fetched batches: far fewer steps than messages
    assert lane["batches"] <= 30 and lane["missed"] == 0
    # and the group's committed offsets reach every partition's end
    c = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=f"{prefix}app",
                      enable_auto_commit=False)
    try:
        ends = {p: n for p, n in counts.items() if n}
        wait_for(lambda: all(c.committed(TopicPartition(topic, p)) == n
                             for p, n in ends.items()), 30, "the commits")
    finally:
        c.close()


def test_a_rebalance_mid_feed_hands_partitions_over_with_nothing_dropped_or_doubled(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """Messages keep coming while a second worker joins: the first finishes its step in
    flight and commits before it gives its partitions up; the second starts them exactly
    there."""
    topic = f"{prefix}traffic.readings"
    junk(stack, topic, {})
    first = make_worker()
    joined: list[Any] = []
    joining = threading.Thread(target=lambda: joined.append(make_worker()))
    joining.start()
    sent = dict.fromkeys(range(PARTITIONS), 0)

    def chunk() -> None:
        for p in sent:
            send(stack, topic, [(f"k{p}-{i}".encode(), f"junk {p} {i}".encode())
                                for i in range(sent[p], sent[p] + 200)], partition=p)
            sent[p] += 200

    while joining.is_alive():
        chunk()
    joining.join()
    second = joined[0]
    wait_both_assigned(first, second)
    chunk()
    want = Counter({(p, o): 1 for p, n in sent.items() for o in range(n)})
    got = dead_offsets(stack, prefix, sum(want.values()))
    assert got == want
    done = [w.counters()["lanes"]["traffic"]["messages"] for w in (first, second)]
    assert sum(done) == sum(want.values()) and min(done) > 0, done


def test_the_sink_dead_letters_what_it_cannot_write_and_writes_the_rest(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """Records on an aggregates topic that are no point reach the dead-letter topic
    (reason ``sink``) with their source and bytes, through the real broker; the good one
    reaches the store."""
    site = f"{prefix}sink-ok"
    make_worker()
    topic = f"{prefix}traffic.aggregates"
    good = {"site_id": site, "window": "1m", "start": 1_700_000_000.0, "ts": 1_700_000_060.0,
            "count": 7, "flow_vph": 420.0, "mean_speed_kph": 61.5}
    bad = [(b"k-junk", b"{not json"), (b"k-nofield", b'{"site_id": "x"}'), (None, b"[1, 2]")]
    send(stack, topic, [*bad, (site.encode(), good)], partition=0)
    dead = [json.loads(r.value) for r in consume_all(stack, f"{prefix}readings.deadletter", 3)]
    assert sorted((d["offset"], d["reason"], d["topic"], d["partition"], d["row"])
                  for d in dead) == [(0, "sink", topic, 0, None), (1, "sink", topic, 0, None),
                                     (2, "sink", topic, 0, None)]
    by_offset = {d["offset"]: d for d in dead}
    for offset, (_, value) in enumerate(bad):
        assert base64.b64decode(by_offset[offset]["value_b64"]) == value
    rows = poll(lambda: export(stack, f'{{__name__="traffic_count",site_id="{site}"}}'),
                lambda r: len(r) == 1, 30, "the good aggregate in the store")
    assert rows[0]["values"] == [7]
    assert rows[0]["timestamps"] == [1_700_000_060_000]
