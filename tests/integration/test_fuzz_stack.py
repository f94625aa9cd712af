"""20,000 hostile messages through a real worker: every reading counted once, nothing lost.

The messages and what each must come to come from tests/fuzzfeed.py (seeded), the same
generator as the in-process fuzz runs; a quarter have a missing or wrong key, so many go
through the re-key topic. The worker's ``/counters`` must match what was sent exactly
(readings, and heartbeats apart), and the dead-letter topic must hold exactly one
well-formed record per dead-lettered reading or heartbeat (the store sink's own ``sink``
records aside).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka import KafkaConsumer

from thurrock_streams.stack import StackConfig

from ..fuzzfeed import KINDS, Generator, Ledger, dead_json
from .harness import poll, producer

pytestmark = pytest.mark.integration

MESSAGES = 20_000
SEED = 20261202


def test_fuzz_feed_on_the_real_stack(stack: StackConfig, prefix: str,
                                     make_worker: Any) -> None:
    worker = make_worker()
    gen = Generator(SEED, n_sites=40, max_frame=10, tag=prefix[:8], now=time.time(),
                    max_depth=20_000)
    ledgers = {k: Ledger() for k in KINDS}
    p = producer(stack)
    sent = []
    for m in gen.messages(MESSAGES):
        if m.key is None and m.value is None:
            m.key = b""  # a Kafka record needs a key or a value
        topic = f"{prefix}{m.kind}.readings"
        sent.append((p.send(topic, key=m.key, value=m.value), topic, m))
    p.flush()
    for fut, topic, m in sent:
        md = fut.get(timeout=30)
        ledgers[m.kind].add(topic, md.partition, md.offset, m)
    p.close()
    t_sent = time.monotonic()
    expect = {k: ledgers[k].readings for k in KINDS}

    counters = poll(lambda: worker.counters()["pipelines"], lambda c: all(
        c[k]["readings_in"] + c[k]["replayed_skipped"] >= expect[k] for k in KINDS), 90,
        f"the worker to count {expect} readings")
    for k in KINDS:
        c = counters[k]
        assert c["replayed_skipped"] == 0, k
        assert c["readings_in"] == expect[k], k
        assert c["readings_in"] == c["accepted"] + sum(c["deadlettered"].values()), k
        assert "internal" not in c["deadlettered"], k
        assert c["heartbeats_in"] == ledgers[k].heartbeats, k
        assert c["heartbeats_in"] == c["heartbeats"] + sum(
            c["heartbeats_deadlettered"].values()), k
    assert all(counters[k]["rekeyed_messages"] > 0 for k in KINDS)

    want = sum(sum(counters[k]["deadlettered"].values()) +
               sum(counters[k]["heartbeats_deadlettered"].values()) for k in KINDS)
    t_counted = time.monotonic()
    records = read_dead_letters(stack, f"{prefix}readings.deadletter", want, timeout=60)
    print(f"fuzz on the stack: {expect} readings sent and counted in "
          f"{t_counted - t_sent:.1f} s, {len(records)} dead letters read in "
          f"{time.monotonic() - t_counted:.1f} s")
    assert len(records) == want
    for key, rec in records:
        kind = rec["topic"][len(prefix):].split(".")[0]
        ledgers[kind].check_dead(key, rec)  # the original key, re-keyed or not
    for k in KINDS:
        ledgers[k].check_complete()
        assert ledgers[k].dead_by_reason == counters[k]["deadlettered"], k
        assert ledgers[k].hb_dead_by_reason == counters[k]["heartbeats_deadlettered"], k


def read_dead_letters(stack: StackConfig, topic: str, want: int,
                      timeout: float) -> list[tuple[bytes | None, dict[str, Any]]]:
    """The readings' dead letters on ``topic``: until ``want`` arrived, then 2 s more to
    see that no more come (the sink's ``sink`` records are left out)."""
    c = KafkaConsumer(topic, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=8 << 20,
                      fetch_max_bytes=64 << 20, max_poll_records=20_000)
    out: list[tuple[bytes | None, dict[str, Any]]] = []
    end = time.monotonic() + timeout
    settle: float | None = None
    try:
        while time.monotonic() < end and (settle is None or time.monotonic() < settle):
            for batch in c.poll(timeout_ms=300).values():
                for r in batch:
                    rec = dead_json(r.value)
                    if rec["reason"] != "sink":
                        out.append((r.key, rec))
            if settle is None and len(out) >= want:
                settle = time.monotonic() + 2.0
    finally:
        c.close()
    return out

