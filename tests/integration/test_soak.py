"""Soak: one of two workers killed (-9) and restarted again and again while a backlog is
consumed; afterwards every aggregate equals an uninterrupted run's (the pure processor
over the whole feed, tests/integration/feeds.py) and the accounting invariant holds
(CONTRACT.md §2: every reading is counted in an aggregate or dead-lettered).

CI runs a short soak (``test_soak_short``, 2 cycles); ``make soak`` runs
``THURROCK_SOAK_CYCLES`` (default 20) cycles, marked slow.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from thurrock_streams.stack import StackConfig

from .feeds import expected_aggregates, traffic_feed
from .harness import Worker, consume_all, holds, poll, send, wait_for
from .test_crash_and_outage import assert_same, pipeline, written

pytestmark = pytest.mark.integration

ASSIGNED = "Executing _on_partitions_assigned"
#: No site goes quiet during the soak: every window is closed by the feed itself.
ENV = {"IDLE_FLUSH_S": "3600"}


def readings_in(feed: list[tuple[bytes, bytes]]) -> int:
    """Readings in the feed's messages (a frame holds several; a heartbeat none)."""
    n = 0
    for _, value in feed:
        rec = json.loads(value)
        if "columns" in rec:
            n += len(next(iter(rec["columns"].values())))
        elif not rec.get("heartbeat"):
            n += 1
    return n


def soak(stack: StackConfig, prefix: str, make_worker: Any, cycles: int,
         sites: int, minutes: int) -> None:
    feed = traffic_feed([f"{prefix}S{i}" for i in range(sites)], minutes=minutes, seed=23)
    want = expected_aggregates(feed, pipeline())
    topic = f"{prefix}traffic.readings"
    steady: Worker = make_worker(**ENV)
    victim: Worker = make_worker(**ENV)
    wait_for(lambda: ASSIGNED in victim.log(), 60, "the second worker's partitions")
    step = -(-len(feed) // (cycles + 1))
    chunks = [feed[i:i + step] for i in range(0, len(feed), step)]
    send(stack, topic, chunks[0])
    for i, chunk in enumerate(chunks[1:]):
        # a backlog is waiting: kill the second worker mid-work, send more, restart it
        send(stack, topic, chunk)
        victim.kill9()
        before = steady.log().count(ASSIGNED)
        victim = make_worker(**ENV)
        wait_for(lambda v=victim: ASSIGNED in v.log(), 90,
                 f"the restarted worker's partitions (cycle {i + 1})")
        wait_for(lambda b=before: steady.log().count(ASSIGNED) > b, 60,
                 f"the steady worker's rebalance (cycle {i + 1})")
    got = poll(lambda: written(stack, prefix), lambda g: len(g) >= len(want), 180,
               "every window after the soak")
    assert_same(got, want)
    # the accounting invariant: the 1-minute windows count every reading of the feed
    # once, and nothing was dead-lettered
    counted = sum(values[0] for (_, window, _), fields in got.items()
                  for name, values in fields.items() if window == "1m" and name == "count")
    assert counted == readings_in(feed)
    assert consume_all(stack, f"{prefix}readings.deadletter", 1, timeout=3) == []


def test_soak_short(stack: StackConfig, prefix: str, make_worker: Any) -> None:
    soak(stack, prefix, make_worker, cycles=2, sites=8, minutes=30)


@pytest.mark.slow
def test_soak_many_kill_9_cycles(stack: StackConfig, prefix: str, make_worker: Any) -> None:
    cycles = int(os.environ.get("THURROCK_SOAK_CYCLES", "20"))
    assert cycles >= 1
    soak(stack, prefix, make_worker, cycles=cycles, sites=12, minutes=8 * cycles)


def test_a_standby_that_read_past_the_reported_end_takes_the_partition_over(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """A worker killed between a step's changelog records and the last one (sent alone)
    leaves a tail batch of several records; the local broker reports a partition's end as
    its last batch's first offset + 1, so the other worker's standby has read past that
    end. When the partitions are dealt out again, the survivor carries on (Faust's
    consistency check stopped it: CI, Dec 2) and every aggregate is an uninterrupted
    run's."""
    from kafka import KafkaProducer

    sites = [f"{prefix}S{i}" for i in range(8)]
    feed = traffic_feed(sites, minutes=20, seed=29)
    want = expected_aggregates(feed, pipeline())
    topic = f"{prefix}traffic.readings"
    steady: Worker = make_worker(**ENV)
    victim: Worker = make_worker(**ENV)
    wait_for(lambda: ASSIGNED in victim.log(), 60, "the second worker's partitions")
    half = len(feed) // 2
    send(stack, topic, feed[:half])
    poll(lambda: written(stack, prefix), lambda g: len(g) > 0, 60, "the first aggregates")
    # the tail such a kill leaves: a batch of several records (here each partition's
    # latest alert-state record three times over, which changes no state)
    changelog = f"{prefix}app-alert-sites-changelog"
    latest = {r.partition: r for r in consume_all(stack, changelog, 10**9, timeout=5)}
    assert latest, "alert states were stored"
    p = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=500,
                      batch_size=1 << 20)
    try:
        for part, rec in latest.items():
            for _ in range(3):
                p.send(changelog, key=rec.key, value=rec.value, partition=part)
        p.flush(30)
    finally:
        p.close(timeout=5)
    holds(lambda: steady.proc is not None and steady.proc.poll() is None, bool, 3,
          "the steady worker, while its standby reads the new tail")
    # the soak's cycle: the other worker killed, then back; the survivor takes everything,
    # then is a standby of that partition again (where Faust's check stopped it)
    before = steady.log().count(ASSIGNED)
    victim.kill9()
    wait_for(lambda: steady.log().count(ASSIGNED) > before, 60,
             "the steady worker's rebalance after the kill")
    before = steady.log().count(ASSIGNED)
    victim = make_worker(**ENV)
    wait_for(lambda: ASSIGNED in victim.log(), 90, "the restarted worker's partitions")
    wait_for(lambda: steady.log().count(ASSIGNED) > before, 60,
             "the steady worker's rebalance after the restart")
    send(stack, topic, feed[half:])
    got = poll(lambda: written(stack, prefix), lambda g: len(g) >= len(want), 120,
               "every window, from the survivor")
    for w in (steady, victim):
        assert w.proc is not None and w.proc.poll() is None, w.log()[-3000:]
        assert "ConsistencyError" not in w.log()
    assert_same(got, want)
