"""Site states as a base record and deltas in a compacted changelog (engine/chain.py).

The judge is the processor's own state: random multi-site feeds (those of test_across.py)
go through ``Processor`` (sites together and one at a time); after every step the records
:func:`chain.write` makes are appended to a log, and folding that log (as Faust's recovery
hands it to ``StateChainTable.apply_changelog_batch``) must give back every site's state,
bit for bit: from the whole log, from the log compacted (the last record per key, in offset
order), and with stale deltas of old generations and repeats in it.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.agents.readings import SiteTable, StateChainTable, partition_for
from thurrock_streams.engine import chain
from thurrock_streams.engine.codec import encode_state
from thurrock_streams.engine.processor import Processor, SiteState
from thurrock_streams.engine.windows import SiteWindows
from thurrock_streams.readings import RawMessage

from .test_across import MIXES, NOW, feed_batches, message, partitions_of, pipeline

Log = list[tuple[bytes, bytes | None]]


def exact(state: SiteState) -> bytes:
    """A state's every field, bit for bit, key order aside: the TSS1 record of the previous
    release (codec.encode_state's generic walk) with its dicts sorted."""
    w = state.windows
    return encode_state({
        "watermark": w.watermark, "run_to": w.run_to,
        "closed_until": dict(sorted(w.closed_until.items())),
        "next_emit": dict(sorted(w.next_emit.items())),
        "span_end": dict(sorted(w.span_end.items())),
        "buf_ts": w.buf_ts, "buf_cols": dict(w.buf_cols),
        "dtypes": [w.buf_ts.dtype.str, *(v.dtype.str for v in w.buf_cols.values())],
        "applied": state.applied, "carry": state.carry})


def compacted(log: Log) -> Log:
    """What a compacted topic keeps: the last record per key, at its offset, in order."""
    last = {k: i for i, (k, _) in enumerate(log)}
    return [rec for i, rec in enumerate(log) if last[rec[0]] == i]


def folded(log: Log) -> dict[bytes, Any]:
    data: dict[bytes, Any] = {}
    chain.fold_all(data, log)
    return data


class Writer:
    """What ReadingsAgent._deliver does with a step's changed states, minus Kafka."""

    def __init__(self) -> None:
        self.log: Log = []
        self.table: dict[bytes, Any] = {}  # what store_states puts in table.data
        self.chains: dict[str, chain.Chain] = {}
        self.kinds = {"base": 0, "delta": 0}

    def store(self, changed: dict[str, SiteState]) -> None:
        tombs: list[bytes] = []
        sends: Log = []
        for site, state in changed.items():
            key = site.encode()
            before = self.chains.get(site)
            recs, t, after = chain.write(key, state, before)
            sends += recs
            tombs += t
            self.table[key] = after.entry
            self.chains[site] = after
            self.kinds["delta" if chain.SEP in recs[0][0] else "base"] += 1
        self.log += sends
        self.log += [(k, None) for k in tombs]  # sent once the records are stored

    def takeover(self) -> None:
        """A restart: the table is what recovery folds, no chain is known."""
        self.table = folded(self.log)
        self.chains = {k.decode(): chain.chain_of(e, chain.decode_entry(e))
                       for k, e in self.table.items()}


def check(writer: Writer, states: dict[str, SiteState]) -> None:
    for log in (writer.log, compacted(writer.log)):
        data = folded(log)
        assert sorted(data) == sorted(s.encode() for s in states)
        for site, state in states.items():
            assert exact(chain.decode_entry(data[site.encode()])) == exact(state)
    for site, state in states.items():  # the table the agent keeps is the fold too
        assert writer.table[site.encode()] == folded(writer.log)[site.encode()]
        assert exact(chain.decode_entry(writer.table[site.encode()])) == exact(state)


def run(kind: str, across: bool, msgs: list[tuple[str | None, bytes]], parts: list[int],
        cuts: list[int], quiet: list[float], takeovers: list[int]) -> Writer:
    proc = Processor(pipeline(kind), partitions_of, across=across)
    states: dict[str, SiteState] = {}
    writer = Writer()
    raws, bounds = feed_batches(kind, msgs, parts, cuts)
    forwarded: list[RawMessage] = []
    for n, (a, z) in enumerate(itertools.pairwise(bounds)):
        out = proc.step(forwarded + raws[a:z], states, NOW)
        states.update(out.changed)
        writer.store(out.changed)
        check(writer, states)
        forwarded = [RawMessage(m.topic, m.partition, m.offset, s.encode(), m.value,
                                forwarded=True) for s, m in out.rekey]
        if n < len(quiet):  # a quiet spell: every site's watermark runs on
            for site in sorted(states):
                ran = proc.run_on(site, states[site], states[site].windows.watermark + quiet[n])
                states.update(ran.changed)
                writer.store(ran.changed)
            check(writer, states)
        if n in takeovers:
            writer.takeover()
            states = {k.decode(): chain.decode_entry(e) for k, e in writer.table.items()}
    return writer


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("kind", ["traffic", "air"])
@settings(max_examples=60)
@given(data=st.data())
def test_folding_the_records_gives_back_the_processors_states(kind: str, across: bool,
                                                              data: st.DataObject) -> None:
    mix = data.draw(st.sampled_from(MIXES))
    msgs = data.draw(st.lists(message(kind, mix), min_size=1, max_size=50))
    parts = data.draw(st.lists(st.integers(0, 1), min_size=len(msgs), max_size=len(msgs)))
    cuts = data.draw(st.lists(st.integers(0, len(msgs)), max_size=12))
    quiet = data.draw(st.lists(st.sampled_from([0.0, 40.0, 400.0, 3700.0]), max_size=3))
    takeovers = data.draw(st.lists(st.integers(0, 12), max_size=2))
    run(kind, across, msgs, parts, cuts, quiet, takeovers)


def single(site: str, ts: float, speed: float = 50.0) -> bytes:
    return orjson.dumps({"site_id": site, "ts": ts, "lane": 1, "speed_kph": speed,
                         "class": "car"})


def test_a_steps_delta_grows_with_its_readings_not_with_the_open_window() -> None:
    """One reading a step inside one 15-minute window: after the first step (a base) every
    step writes a delta of the same size, however many readings the window holds."""
    proc = Processor(pipeline("traffic"))
    states: dict[str, SiteState] = {}
    writer = Writer()
    sizes = []
    for i in range(40):  # 2 s apart: all in the window [0, 900)
        out = proc.step([RawMessage("traffic.readings", 0, i, b"d", single("d", 2.0 * i))],
                        states, NOW)
        states.update(out.changed)
        n = len(writer.log)
        writer.store(out.changed)
        sizes.append([len(k) + len(v or b"") for k, v in writer.log[n:]])
    assert states["d"].windows.buf_ts.size == 40  # the buffer grew to 40 rows ...
    deltas = [s for s in sizes if len(s) == 1 and s[0] < sizes[0][0]]
    assert len(deltas) >= 30
    assert len(set(map(tuple, deltas))) <= 2  # ... and the deltas did not (watermark only,
    # or watermark and the span when a reading opens a window of a shorter length)
    check(writer, states)


def test_a_trimmed_buffer_is_rebased_and_the_old_deltas_tombstoned() -> None:
    proc = Processor(pipeline("traffic"))
    states: dict[str, SiteState] = {}
    writer = Writer()
    for i, ts in enumerate([10.0, 20.0, 30.0, 2000.0]):  # 2000 closes [0, 900): rows trimmed
        out = proc.step([RawMessage("traffic.readings", 0, i, b"d", single("d", ts))],
                        states, NOW)
        states.update(out.changed)
        writer.store(out.changed)
    keys = [k for k, _ in writer.log]
    assert keys == [b"d", b"d\x00\x01", b"d\x00\x02", b"d", b"d\x00\x01", b"d\x00\x02"]
    assert [v is None for _, v in writer.log] == [False] * 4 + [True] * 2
    assert chain.generation(writer.log[3][1] or b"") == 2
    assert states["d"].windows.buf_ts.tolist() == [2000.0]
    assert len(compacted(writer.log)) == 3  # the new base and two tombstones
    check(writer, states)


def test_stale_and_repeated_deltas_are_ignored() -> None:
    proc = Processor(pipeline("traffic"))
    states: dict[str, SiteState] = {}
    writer = Writer()
    for i in range(3):
        out = proc.step([RawMessage("traffic.readings", 0, i, b"d", single("d", 10.0 + i))],
                        states, NOW)
        states.update(out.changed)
        writer.store(out.changed)
    log = list(writer.log)  # base g1, delta 1, delta 2
    assert [k for k, _ in log] == [b"d", b"d\x00\x01", b"d\x00\x02"]
    want = exact(states["d"])
    # a retried send: a delta twice
    assert exact(chain.decode_entry(folded([*log, log[2]])[b"d"])) == want
    # deltas of an old generation left behind a newer base (no tombstone reached the log)
    base2 = chain.encode_base(states["d"], 2)
    assert exact(chain.decode_entry(folded([*log, (b"d", base2), log[1], log[2]])[b"d"])) \
        == want
    assert folded([*log, (b"d", base2), log[1], log[2]])[b"d"] == (base2,)
    # a delta out of turn (its predecessor compacted away by a newer one) or without a base
    assert folded([log[0], log[2]])[b"d"] == (log[0][1],)
    assert folded([log[1], log[2]]) == {}
    # a delta's tombstone changes nothing; the base's deletes the site
    assert folded([*log, (b"d\x00\x01", None)])[b"d"] == tuple(v for _, v in log)
    assert folded([*log, (b"d", None)]) == {}


def test_a_state_stored_by_the_previous_release_still_decodes_and_is_rebased() -> None:
    proc = Processor(pipeline("air"))
    msgs = [RawMessage("air.readings", 0, i, b"a", orjson.dumps(
        {"site_id": "a", "ts": 100.0 * i, "no2_ugm3": 40.5, "pm25_ugm3": 11.0}))
        for i in range(5)]
    out = proc.step(msgs, {}, NOW)
    state = out.changed["a"]
    old = state.encode()  # one TSS1 record, as the previous release wrote
    assert old[:4] == b"TSS1"
    data = folded([(b"a", old)])
    assert exact(chain.decode_entry(data[b"a"])) == exact(state)
    before = chain.chain_of(data[b"a"], chain.decode_entry(data[b"a"]))
    recs, tombs, after = chain.write(b"a", state, before)
    assert [k for k, _ in recs] == [b"a"] and tombs == []
    assert chain.generation(recs[0][1]) == 1
    assert exact(chain.decode_entry(after.entry)) == exact(state)


def test_records_refuse_other_dtypes_and_foreign_bytes() -> None:
    w = SiteWindows(buf_ts=np.zeros(1), buf_cols={"x": np.array(["a"], dtype=object)})
    with pytest.raises(TypeError):
        chain.encode_base(SiteState(w), 1)
    good = chain.encode_base(SiteState(SiteWindows(
        buf_ts=np.zeros(1), buf_cols={"x": np.zeros(1, dtype=np.int8)})), 1)
    bad = good.replace(b"|i1", b"|O8")
    with pytest.raises((ValueError, TypeError)):
        chain.decode_entry((bad,))
    with pytest.raises(ValueError):
        chain.decode_entry((b"pickle me",))
    with pytest.raises(ValueError):
        chain.decode_entry((good + b"\x00",))
    assert struct.unpack_from("<4sI", good) == (b"TSB2", 1)


def test_every_key_of_a_site_goes_to_the_sites_partition() -> None:
    for site in (b"A13-STIFFORD-EB", b"c 2", "é,=\"".encode()):
        p = partition_for(site, 12)
        keys = [site, *(chain.delta_key(site, s) for s in range(1, chain.MAX_DELTAS + 1))]
        assert {chain.site_of_key(k) for k in keys} == {site}
        table: Any = SiteTable.__new__(StateChainTable)
        table.partitions = 12
        assert {SiteTable.partition_for_key(table, k) for k in keys} == {p}


def test_a_delta_keeps_every_bit_of_the_scalars() -> None:
    """-0.0 is not 0.0: a delta carries a watermark whose only change is its sign bit."""
    w = SiteWindows(watermark=0.0, closed_until={60: 0.0}, buf_ts=np.zeros(0))
    _, _, ch = chain.write(b"z", SiteState(w, {"t:0": 1}), None)
    new = SiteState(SiteWindows(watermark=-0.0, closed_until={60: -0.0}, buf_ts=np.zeros(0)),
                    {"t:0": 2})
    recs, _, after = chain.write(b"z", new, ch)
    assert recs[0][0] == b"z\x00\x01"
    assert exact(chain.decode_entry(after.entry)) == exact(new)
    assert str(chain.decode_entry(after.entry).windows.watermark) == "-0.0"


def test_recovery_folds_a_batch_of_changelog_events_into_one_entry_per_site() -> None:
    """``StateChainTable.apply_changelog_batch`` on Faust's memory store, with events as
    Faust's recovery hands them over (raw key and value on ``event.message``)."""
    from types import SimpleNamespace

    from faust.stores.memory import Store

    proc = Processor(pipeline("traffic"))
    states: dict[str, SiteState] = {}
    writer = Writer()
    for i, (site, ts) in enumerate([("d", 10.0), ("e", 11.0), ("d", 12.0), ("d", 2000.0),
                                    ("e", 13.0)]):
        out = proc.step([RawMessage("traffic.readings", 0, i, site.encode(),
                                    single(site, ts))], states, NOW)
        states.update(out.changed)
        writer.store(out.changed)
    store: Any = Store.__new__(Store)
    store.data, store._key_partition = {}, {}
    table: Any = SimpleNamespace(data=store)
    events = [SimpleNamespace(message=SimpleNamespace(key=k, value=v, partition=3))
              for k, v in writer.log]
    StateChainTable.apply_changelog_batch(table, events[:4])
    StateChainTable.apply_changelog_batch(table, events[4:])  # batches split anywhere
    assert sorted(store.data) == [b"d", b"e"] and store._key_partition == {b"d": 3, b"e": 3}
    for site, state in states.items():
        assert exact(chain.decode_entry(store.data[site.encode()])) == exact(state)
    StateChainTable.apply_changelog_batch(table, [SimpleNamespace(message=SimpleNamespace(
        key=b"e", value=None, partition=3))])
    assert list(store.data) == [b"d"] and store._key_partition == {b"d": 3}


def reference_base(state: SiteState, gen: int) -> bytes:
    """A base record written out field by field from the layout in ``encode_base``'s
    docstring, one ``struct.pack`` per field (the encoder packs the fixed part at once)."""
    w = state.windows
    out = [b"TSB2", struct.pack("<I", gen), struct.pack("<d", w.watermark),
           struct.pack("<d", w.run_to)]
    for d in (w.closed_until, w.next_emit, w.span_end):
        out.append(struct.pack("<B", len(d)))
        for length, value in d.items():
            out += [struct.pack("<i", length), struct.pack("<d", value)]
    out.append(struct.pack("<H", len(state.applied)))
    for src, off in state.applied.items():
        out += [struct.pack("<H", len(src.encode())), src.encode(), struct.pack("<q", off)]
    out.append(struct.pack("<B", len(w.buf_cols)))
    for name, v in w.buf_cols.items():
        dn = v.dtype.str.encode()
        out += [struct.pack("<H", len(name.encode())), name.encode(), struct.pack("<B", len(dn)),
                dn]
    carry = encode_state(state.carry) if state.carry else b""
    out += [struct.pack("<I", w.buf_ts.size), struct.pack("<I", len(carry)), carry,
            w.buf_ts.astype("<f8").tobytes()]
    out += [v.tobytes() for v in w.buf_cols.values()]
    return b"".join(out)


_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(-0.0))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_base_record_is_the_layout_written_field_by_field(data: Any) -> None:
    sizes = st.dictionaries(st.sampled_from([60, 300, 900, 3600]), _FLOATS, max_size=4)
    n = data.draw(st.integers(0, 12))
    dtypes = [np.int8, np.uint8, np.int16, np.float32, np.float64, np.int64, np.bool_]
    names = data.draw(st.lists(st.text(min_size=1, max_size=12), max_size=5, unique=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cols = {name: (rng.normal(0, 100, n) * 3).astype(data.draw(st.sampled_from(dtypes)))
            for name in names}
    state = SiteState(
        SiteWindows(data.draw(_FLOATS), data.draw(sizes), data.draw(sizes),
                    rng.normal(1.7e9, 1e5, n), cols, data.draw(sizes), data.draw(_FLOATS)),
        data.draw(st.dictionaries(st.text(min_size=1, max_size=30),
                                  st.integers(-1, 2**62), max_size=3)),
        data.draw(st.sampled_from([{}, {"runs": {"speed_kph": [3.0, 50.0]}},
                                   {"x": np.arange(3.0)}])))
    gen = data.draw(st.integers(0, 2**32 - 1))
    assert chain.encode_base(state, gen) == reference_base(state, gen)
    assert chain.encode_base(state, gen) == reference_base(state, gen)  # the caches warm
