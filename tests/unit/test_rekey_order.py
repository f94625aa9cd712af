"""Re-keying under any interleaving: every reading counted once, none skipped as replayed.

A simulated worker owns every partition of a source topic and of its re-key topic and
consumes them as Faust may: batches that mix partitions of both topics in any
interleaving, of any size, each partition in offset order. Messages sit on the wrong
partition about one time in four (a missing or wrong key), and valid readings, readings
out of range, readings missing a field, undecodable bytes and frames with bad rows are
mixed. The expected counts come from how the feed was generated, not from the processor.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.agents.readings import partition_for
from thurrock_streams.engine.processor import Processor, SiteState
from thurrock_streams.engine.windows import EngineConfig
from thurrock_streams.readings import RawMessage
from thurrock_streams.registry import Registry
from thurrock_streams.traffic import TrafficPipeline

PARTITIONS = 4
TOPIC = "traffic.readings"
SITES = [f"site-{i}" for i in range(10)]
T0 = 1_800_000_000.0


def partition_of(site: str) -> int:
    return partition_for(site.encode(), PARTITIONS)


def partitions_of(sites: list[str]) -> list[int]:
    return [partition_of(site) for site in sites]


@dataclass
class Feed:
    """Messages per source partition and what they must come to."""

    partitions: list[list[RawMessage]] = field(
        default_factory=lambda: [[] for _ in range(PARTITIONS)])
    readings: int = 0
    valid: int = 0
    dead: Counter[str] = field(default_factory=Counter)

    def add(self, rng: random.Random, value: bytes, site: str | None) -> None:
        home = partition_of(site) if site is not None else rng.randrange(PARTITIONS)
        p = home if rng.random() < 0.75 else rng.randrange(PARTITIONS)
        key = None if rng.random() < 0.5 and p != home else (site or "?").encode()
        part = self.partitions[p]
        part.append(RawMessage(TOPIC, p, len(part), key, value))


def reading(site: str, ts: float, speed: float = 50.0) -> dict[str, object]:
    return {"site_id": site, "ts": ts, "lane": 1, "speed_kph": speed}


def make_feed(rng: random.Random, n: int) -> Feed:
    feed = Feed()
    for _ in range(n):
        site = rng.choice(SITES)
        ts = T0 + rng.uniform(0, 3600)
        kind = rng.random()
        feed.readings += 1
        if kind < 0.6:
            feed.add(rng, json.dumps(reading(site, ts)).encode(), site)
            feed.valid += 1
        elif kind < 0.7:
            feed.add(rng, json.dumps(reading(site, ts, speed=300.0)).encode(), site)
            feed.dead["range"] += 1
        elif kind < 0.8:
            feed.add(rng, json.dumps({"site_id": site, "ts": ts, "speed_kph": 5}).encode(), site)
            feed.dead["schema"] += 1
        elif kind < 0.85:
            feed.add(rng, b"\xff not json", None)
            feed.dead["decode"] += 1
        else:  # a frame of 3 rows, the middle one out of range
            feed.readings += 2
            feed.valid += 2
            feed.dead["range"] += 1
            cols = {"ts": [ts, ts + 1, ts + 2], "lane": [1, 2, 1],
                    "speed_kph": [40.0, 999.0, 60.0]}
            feed.add(rng, json.dumps({"site_id": site, "columns": cols}).encode(), site)
    return feed


def consume(feed: Feed, rng: random.Random) -> tuple[Processor, list[dict[str, object]]]:
    """Run the feed through one processor in random batches until nothing is left."""
    cfg = EngineConfig((60, 900), allowed_lateness_s=1e7, max_clock_skew_s=1e7)
    proc = Processor(TrafficPipeline(cfg, Registry({}, {})), partitions_of=partitions_of)
    queues: list[list[RawMessage]] = [list(p) for p in feed.partitions]
    queues += [[] for _ in range(PARTITIONS)]  # the re-key topic's partitions
    states: dict[str, SiteState] = {}
    dead: list[dict[str, object]] = []
    while any(queues):
        # A random merge of slices of some partitions: Faust's batches interleave
        # partitions, each one in offset order.
        slices: list[list[RawMessage]] = []
        live = [q for q in queues if q]
        for q in rng.sample(live, rng.randint(1, len(live))):
            take = rng.randint(1, min(len(q), 40))
            slices.append(q[:take])
            del q[:take]
        turns = [i for i, s in enumerate(slices) for _ in s]
        rng.shuffle(turns)
        ordered = [slices[i].pop(0) for i in turns]
        out = proc.step(ordered, states, now=T0 + 4000)
        states.update(out.changed)
        dead += [d for _, d in out.deadletters]
        for site, m in out.rekey:
            queues[PARTITIONS + partition_of(site)].append(
                RawMessage(m.topic, m.partition, m.offset, site.encode(), m.value,
                           forwarded=True))
    return proc, dead


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400))
def test_every_reading_is_counted_once_under_any_interleaving(seed: int, n: int) -> None:
    rng = random.Random(seed)
    feed = make_feed(rng, n)
    proc, dead = consume(feed, rng)
    c = proc.counters
    assert c.replayed_skipped == 0
    assert c.readings_in == feed.readings
    assert c.accepted == feed.valid
    assert c.deadlettered == {k: v for k, v in feed.dead.items() if v}
    assert c.readings_in == c.accepted + sum(c.deadlettered.values())
    ids = [(d["topic"], d["partition"], d["offset"], d["row"]) for d in dead]
    assert len(ids) == len(set(ids)) == sum(feed.dead.values())


def test_a_rejected_message_forwarded_before_a_later_accepted_one() -> None:
    """The case the issue found: in one batch, a misrouted message of a site that is
    rejected comes before an accepted one of the same site and source partition; both
    are forwarded in that order and both are counted at the site's partition."""
    site = SITES[0]
    wrong = (partition_of(site) + 1) % PARTITIONS
    bad = RawMessage(TOPIC, wrong, 7, None, json.dumps(reading(site, T0, 300.0)).encode())
    good = RawMessage(TOPIC, wrong, 8, None, json.dumps(reading(site, T0 + 1)).encode())
    proc = Processor(TrafficPipeline(EngineConfig((60, 900)), Registry({}, {})),
                     partitions_of=partitions_of)
    out = proc.step([bad, good], {}, now=T0 + 10)
    assert [m.offset for _, m in out.rekey] == [7, 8]
    fwd = [RawMessage(m.topic, m.partition, m.offset, site.encode(), m.value, forwarded=True)
           for _, m in out.rekey]
    out2 = proc.step(fwd, {}, now=T0 + 10)
    c = proc.counters
    assert (c.readings_in, c.accepted, c.deadlettered, c.replayed_skipped) == \
        (2, 1, {"range": 1}, 0)
    assert [d["offset"] for _, d in out2.deadletters] == [7]
