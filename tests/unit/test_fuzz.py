"""Fuzzing decode and the processor in-process: no exception escapes, nothing is lost.

The messages come from tests/fuzzfeed.py (seeded), with what the contract says each must
come to. For each run: ``readings_in`` equals the readings sent (counted by the
generator), equals ``accepted + Σ deadlettered``; the dead-letter records equal the
counters by reason, each is well-formed, names a reading sent, once, with a reason that
reading may have; every reading that must be dead-lettered is; ``replayed_skipped`` is 0.

CI runs ``FUZZ_MESSAGES`` (default 12,000) messages per run; ``make fuzz`` runs 10⁶
(``FUZZ_MESSAGES``, ``FUZZ_SEED``; docs/testing.md).
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.agents.readings import ReadingsAgent
from thurrock_streams.air import AirPipeline
from thurrock_streams.engine.processor import Pipeline, Processor, SiteState, StepOutput
from thurrock_streams.engine.windows import EngineConfig
from thurrock_streams.readings import RawMessage, decode_batch
from thurrock_streams.registry import Registry
from thurrock_streams.traffic import TrafficPipeline

from ..fuzzfeed import (
    AIR_FIELDS,
    KINDS,
    LATENESS_S,
    MISSING,
    NOW,
    RANGE,
    SCHEMA,
    SKEW_S,
    TRAFFIC_CLASSES,
    TRAFFIC_FIELDS,
    Generator,
    Ledger,
    _number_verdict,
    enc,
    key_partition,
    site_partition,
)

MESSAGES = int(os.environ.get("FUZZ_MESSAGES", "12000"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
CHUNK = 5_000
BIG = MESSAGES >= 100_000  # the make-fuzz run: huge frames too


def topic(kind: str) -> str:
    return f"{kind}.readings"


def pipeline(kind: str) -> Pipeline:
    if kind == "traffic":
        return TrafficPipeline(EngineConfig((60, 900), LATENESS_S, SKEW_S), Registry({}, {}))
    return AirPipeline.create(LATENESS_S, SKEW_S)


def generator(seed: int) -> Generator:
    return Generator(seed, max_frame=60 if BIG else 40, huge_frame_every=50_000 if BIG else 0)


#: Share of the run's messages per kind in the processor runs (together, the whole run).
SHARE = {"traffic": 0.6, "air": 0.4}


def chunks(gen: Generator, total: int, kind: str | None = None) -> Any:
    """The run's messages, ``CHUNK`` at a time, by kind (only ``kind``'s if given)."""
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        msgs = list(gen.messages(n, done, total, kind))
        done += n
        yield {k: [m for m in msgs if m.kind == k] for k in KINDS}


def check_counters(p: Processor, ledger: Ledger) -> None:
    c = p.counters
    assert c.readings_in == ledger.readings
    assert c.readings_in == c.accepted + sum(c.deadlettered.values())
    assert c.deadlettered == {r: n for r, n in ledger.dead_by_reason.items() if n}
    assert c.replayed_skipped == 0
    # heartbeats are not readings: counted apart, with the same exactness
    assert c.heartbeats_in == ledger.heartbeats
    assert c.heartbeats_in == c.heartbeats + sum(c.heartbeats_deadlettered.values())
    assert c.heartbeats_deadlettered == {r: n for r, n in ledger.hb_dead_by_reason.items()}


def check_out(out: StepOutput, ledger: Ledger, rekeyed: bool = False) -> None:
    """Dead letters against the ledger; every output serialisable as the agent sends it."""
    for key, rec in out.deadletters:
        orjson.dumps(rec)
        ledger.check_dead(key, rec, rekeyed)
    for _, rec in out.aggregates:
        orjson.dumps(rec)


# -- decode alone ------------------------------------------------------------------------

def test_decode_fuzz_gives_each_reading_its_verdict() -> None:
    """Decoding alone: every valid reading is accepted, every invalid one rejected with a
    reason it may have, nothing else."""
    gen = generator(SEED)
    total = 0
    for by_kind in chunks(gen, MESSAGES):
        for kind, msgs in by_kind.items():
            raws = [RawMessage(topic(kind), 0, i, m.key, m.value) for i, m in enumerate(msgs)]
            b = decode_batch(kind, raws)
            accepted = set(zip(b.msg.tolist(), b.row.tolist(), strict=True))
            rejected = {(r.msg, -1 if r.row is None else r.row): r.reason for r in b.rejected}
            assert len(rejected) == len(b.rejected), "a reading rejected twice"
            assert not accepted & set(rejected)
            beats = {h.msg for h in b.heartbeats}
            for i, m in enumerate(msgs):
                if m.heartbeat is not None:
                    if m.heartbeat:
                        assert rejected.pop((i, -1)) in m.heartbeat, (m.heartbeat, m.value)
                    else:
                        assert i in beats, m.value
                        beats.discard(i)
                    continue
                for s in m.slots:
                    where = (i, -1 if s.row is None else s.row)
                    if s.dec:
                        assert where in rejected, (m.what, s, m.value)
                        assert rejected.pop(where) in s.dec, (m.what, s, m.value)
                    else:
                        assert where in accepted, (m.what, s, m.value)
                        accepted.discard(where)
                total += len(m.slots)
            assert not accepted and not rejected and not beats, (accepted, rejected, beats)
    assert total > MESSAGES


# -- the processor, every message on its site's partition (no re-keying) -----------------------

@pytest.mark.parametrize("kind", KINDS)
def test_processor_fuzz_accounts_for_every_reading(kind: str) -> None:
    rng = random.Random(SEED + 1)
    gen = generator(SEED + (kind == "air"))
    p = Processor(pipeline(kind))
    ledger = Ledger()
    states: dict[str, SiteState] = {}
    offsets = [0, 0, 0]
    for by_kind in chunks(gen, int(MESSAGES * SHARE[kind]), kind):
        raws = []
        for m in by_kind[kind]:
            part = rng.randrange(3)
            raws.append(RawMessage(topic(kind), part, offsets[part], m.key, m.value))
            ledger.add(topic(kind), part, offsets[part], m)
            offsets[part] += 1
        i = 0
        while i < len(raws):
            n = rng.choice([1, 2, 7, 50, 400, 3000])
            out = p.step(raws[i:i + n], states, NOW)
            i += n
            states.update(out.changed)
            check_out(out, ledger)
        ledger.check_complete()
        check_counters(p, ledger)
        ledger.forget()
    c = p.counters
    assert c.accepted > 0 and c.windows_closed > 0
    assert c.heartbeats > 0 and c.heartbeats_deadlettered.get("schema", 0) > 0


# -- the processor with re-keying: source partitions and the re-key topic interleaved ----------

@pytest.mark.parametrize("kind", KINDS)
def test_processor_fuzz_with_rekeying_accounts_for_every_reading(kind: str) -> None:
    parts = 4
    rng = random.Random(SEED + 2)
    gen = generator(SEED + 2 + (kind == "air"))
    part_of = site_partition(parts)
    p = Processor(pipeline(kind), partitions_of=lambda sites: [part_of(s) for s in sites])
    ledger = Ledger()
    states: dict[str, SiteState] = {}
    queues: dict[tuple[bool, int], deque[RawMessage]] = {
        (fwd, q): deque() for fwd in (False, True) for q in range(parts)}
    offsets = [0] * parts
    for by_kind in chunks(gen, int(MESSAGES * SHARE[kind]), kind):
        for m in by_kind[kind]:
            q = key_partition(m.key, parts, rng)
            queues[(False, q)].append(RawMessage(topic(kind), q, offsets[q], m.key, m.value))
            ledger.add(topic(kind), q, offsets[q], m)
            offsets[q] += 1
        while any(queues.values()):
            # A batch as a consumer hands it over: runs of messages from some partitions of
            # both topics, each partition's messages in order.
            ready = [k for k, v in queues.items() if v]
            batch: list[RawMessage] = []
            for k in rng.sample(ready, rng.randint(1, len(ready))):
                for _ in range(min(len(queues[k]), rng.choice([1, 3, 20, 200, 2000]))):
                    batch.append(queues[k].popleft())
            out = p.step(batch, states, NOW)
            states.update(out.changed)
            check_out(out, ledger, rekeyed=True)
            for site, rm in out.rekey:
                queues[(True, part_of(site))].append(RawMessage(
                    rm.topic, rm.partition, rm.offset, site.encode(), rm.value, forwarded=True))
        check_counters(p, ledger)
        ledger.check_complete()
        ledger.forget()
    assert p.counters.rekeyed_messages > 0


# -- the agent's one-by-one fallback -------------------------------------------------------------

class FlakyPipeline:
    """A pipeline that fails now and then, as a bug would, while its processor is armed."""

    def __init__(self, inner: Pipeline, rng: random.Random) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.config = inner.config
        self.rng = rng
        self.armed = False
        self.failed = 0
        self.spans_of_its_own = inner.spans_of_its_own
        self.buffered = getattr(inner, "buffered", None)  # the columns production keeps

    def on_accept(self, carry: dict[str, Any], ts: Any, cols: dict[str, Any]) -> None:
        if self.armed and self.rng.random() < 0.5:
            self.failed += 1
            raise RuntimeError("injected failure in the middle of a step")
        self.inner.on_accept(carry, ts, cols)

    def on_heartbeat(self, carry: dict[str, Any], ts: float) -> None:
        self.inner.on_heartbeat(carry, ts)

    def aggregates(self, site: str, closed: list[Any], carry: dict[str, Any]) -> Any:
        return self.inner.aggregates(site, closed, carry)


class FlakyProcessor(Processor):
    """A processor whose batch steps fail now and then (``when``: before the step did
    anything, or in its middle, after some sites were stepped); single messages never
    fail, so nothing is ``internal``."""

    def __init__(self, pipe: Pipeline, rng: random.Random, when: str) -> None:
        self.flaky = FlakyPipeline(pipe, rng)
        super().__init__(self.flaky)
        self.rng = rng
        self.when = when
        self.failed = 0

    def step(self, messages: list[RawMessage], states: Mapping[str, SiteState],
             now: float) -> StepOutput:
        fail = len(messages) > 1 and self.rng.random() < 0.3
        if fail and self.when == "before":
            self.failed += 1
            raise RuntimeError("injected failure")
        self.flaky.armed = fail
        try:
            return super().step(messages, states, now)
        finally:
            self.flaky.armed = False


@pytest.mark.parametrize("when", ["before", "midway"])
def test_agent_fallback_fuzz_accounts_for_every_reading(when: str,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """``ReadingsAgent._process`` itself, on a stand-in agent whose table is a dict."""
    caplog.set_level("CRITICAL")  # the fallback logs every injected failure
    kind = "traffic"
    rng = random.Random(SEED + 3)
    proc = FlakyProcessor(pipeline(kind), random.Random(SEED + 4), when)
    agent: Any = SimpleNamespace(processor=proc, table={}, cache={})
    ledger = Ledger()
    offset = 0
    gen = generator(SEED + 3)
    for by_kind in chunks(gen, max(MESSAGES // 4, 2000), kind):
        raws = []
        for m in by_kind[kind]:
            raws.append(RawMessage(topic(kind), 0, offset, m.key, m.value))
            ledger.add(topic(kind), 0, offset, m)
            offset += 1
        i = 0
        while i < len(raws):
            n = rng.choice([1, 5, 60, 500])
            out = ReadingsAgent._process(agent, raws[i:i + n], NOW)
            i += n
            check_out(out, ledger)
            for site, state in out.changed.items():  # as ReadingsAgent._deliver stores them
                data = state.encode()
                agent.table[site.encode()] = data
                agent.cache[site] = (data, state)
        ledger.check_complete()
        check_counters(proc, ledger)
        ledger.forget()
    assert (proc.failed if when == "before" else proc.flaky.failed) > 0
    assert "internal" not in proc.counters.deadlettered


# -- hypothesis: any JSON value in any field ------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(10**500), 10**500) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


def _number(f: Any) -> st.SearchStrategy[Any]:
    if f.integer:
        return st.integers(int(f.lo) - 2, int(f.hi) + 2)
    return st.floats(f.lo - 1, f.hi + 1)


def value_verdict(f: Any, v: Any) -> frozenset[str]:
    """The contract's rule for any value of a numeric field (CONTRACT.md §2)."""
    if v is MISSING or v is None:
        return SCHEMA if f.required else frozenset()
    if type(v) not in (int, float):
        return SCHEMA  # booleans, strings, arrays, objects
    if type(v) is int and abs(v) > 1.7976931348623157e308:
        return RANGE
    return _number_verdict(f, float(v))


def ts_verdict(v: Any) -> tuple[frozenset[str], bool]:
    from datetime import datetime

    if v is MISSING or v is None or type(v) not in (int, float, str):
        return SCHEMA, False
    if type(v) is str:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return SCHEMA, False
        if dt.tzinfo is None:
            return SCHEMA, False
        return frozenset(), dt.timestamp() > NOW + SKEW_S
    if (type(v) is int and abs(v) > 1.7976931348623157e308) or math.isnan(v) or math.isinf(v):
        return RANGE, False
    return frozenset(), v > NOW + SKEW_S


@st.composite
def any_reading(draw: st.DrawFn, kind: str) -> tuple[bytes, frozenset[str], bool]:
    """A reading whose every field is drawn from valid values or any JSON at all."""
    obj: dict[str, Any] = {"site_id": draw(st.sampled_from(["A13", 'q"=, \\', "中文"]))}
    ts = draw(st.floats(NOW - 3600, NOW) | st.just(MISSING) | JSON)
    verdict, future = ts_verdict(ts)
    dec = set(verdict)
    obj["ts"] = ts
    present = False
    for f in TRAFFIC_FIELDS if kind == "traffic" else AIR_FIELDS:
        v = draw(_number(f) | st.just(MISSING) | JSON)
        obj[f.name] = v
        dec |= value_verdict(f, v)
        present |= f.name.endswith(("_ugm3", "_mgm3")) and v is not MISSING and v is not None
    if kind == "traffic":
        c = draw(st.sampled_from([*TRAFFIC_CLASSES, MISSING]) | JSON)
        obj["class"] = c
        if not (c is MISSING or c is None or (type(c) is str and c in TRAFFIC_CLASSES)):
            dec.add("schema")
    elif not present:
        dec.add("schema")
    value = enc({k: v for k, v in obj.items() if v is not MISSING}).encode()
    return value, frozenset(dec), future and not dec


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100)
@given(data=st.data())
def test_any_json_in_any_field_gets_the_contract_verdict(kind: str, data: st.DataObject) -> None:
    readings = data.draw(st.lists(any_reading(kind), min_size=1, max_size=8))
    msgs = [RawMessage(topic(kind), 0, i, b"k", v) for i, (v, _, _) in enumerate(readings)]
    b = decode_batch(kind, msgs)
    got = {r.msg: r.reason for r in b.rejected}
    for i, (_, dec, _) in enumerate(readings):
        assert (got[i] in dec) if dec else (i not in got and i in b.msg.tolist()), (
            msgs[i].value, dec, got.get(i))
    p = Processor(pipeline(kind))
    out = p.step(msgs, {}, NOW)
    c = p.counters
    assert c.readings_in == len(readings) == c.accepted + sum(c.deadlettered.values())
    for i, (_, dec, future) in enumerate(readings):
        reasons = [d["reason"] for _, d in out.deadletters if d["offset"] == i]
        if dec or future:
            assert reasons == [got[i] if dec else "future"]
