"""The Outbox: a step's records as whole record batches (agents/produce.py).

The producer here is a stand-in that keeps each submitted batch and reads its records
back with aiokafka's own record-batch parser; the integration tests (test_delivery.py,
test_crash_and_outage.py, test_soak.py) send through the real producer to the real broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatch

from thurrock_streams.agents.produce import BATCH_BYTES, Outbox

PARTITIONS = 4


class _Client:
    async def _wait_on_metadata(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))


class _Accumulator:
    _compression_type = 0


class _Producer:
    """Keeps (topic, partition, records, submitted-while-earlier-batches-pending)."""

    def __init__(self) -> None:
        self.client = _Client()
        self._message_accumulator = _Accumulator()
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None, list[Any]]]]] = []
        self.rounds: list[int] = []  # the index of the gather round each batch went in
        self._round = 0
        self._pending: list[asyncio.Future[None]] = []

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        records = [(r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(batch._build())]
        self.sent.append((topic, partition, records))
        self.rounds.append(self._round)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return _Acked(fut, self)


class _Acked:
    """A delivery future that notes when it was awaited (the end of a round of sends)."""

    def __init__(self, fut: asyncio.Future[None], producer: _Producer) -> None:
        self.fut, self.producer = fut, producer

    def __await__(self) -> Any:
        self.producer._round = len(self.producer.sent)
        return self.fut.__await__()


class _Transport:
    def __init__(self, producer: _Producer) -> None:
        self._producer = producer

    def _ensure_producer(self) -> _Producer:
        return self._producer


class _App:
    def __init__(self) -> None:
        self.aio = _Producer()
        self.producer = _Transport(self.aio)


def _kafka_partition(key: bytes) -> int:
    # Kafka's default partitioner, written out: murmur2, positive, modulo the count.
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def test_records_go_to_the_key_partition_in_the_order_added_with_their_headers() -> None:
    app = _App()
    box = Outbox(app)
    keys = [f"site-{i % 7}".encode() for i in range(50)]
    for i, k in enumerate(keys):
        box.add("aggs", k, b"v%d" % i, [("h", b"%d" % i)])
    box.add("dead", None, b"x")
    box.add("dead", None, b"y")
    box.add("aggs", b"pinned", b"p", partition=3)
    assert len(box) == 53
    asyncio.run(box.send())
    got: dict[tuple[str, int], list[Any]] = {}
    for topic, p, recs in app.aio.sent:
        got.setdefault((topic, p), []).extend(recs)
    for p in range(PARTITIONS):
        want = [(k, b"v%d" % i, [("h", b"%d" % i)]) for i, k in enumerate(keys)
                if _kafka_partition(k) == p]
        if p == 3:
            want.append((b"pinned", b"p", []))
        assert got.get(("aggs", p), []) == want
    # Keyless records take the partitions in turn.
    dead = sorted((p, recs) for topic, p, recs in app.aio.sent if topic == "dead")
    assert [p for p, _ in dead] == [0, 1]
    assert [r[1] for _, recs in dead for r in recs] == [b"x", b"y"]


def test_a_partition_run_larger_than_a_batch_is_split_in_order() -> None:
    app = _App()
    box = Outbox(app)
    value = b"z" * 100_000
    n = 3 * BATCH_BYTES // len(value) + 2  # a little over three batches' worth
    for i in range(n):
        box.add("changelog", b"k%d" % i, value, partition=1)
    asyncio.run(box.send())
    sizes = [len(recs) for _, _, recs in app.aio.sent]
    assert len(sizes) == 4 and sum(sizes) == n
    keys = [r[0] for _, _, recs in app.aio.sent for r in recs]
    assert keys == [b"k%d" % i for i in range(n)]


def test_last_alone_sends_each_partitions_last_record_after_the_rest_are_acknowledged() -> None:
    app = _App()
    box = Outbox(app)
    for i in range(5):
        box.add("changelog", b"a%d" % i, b"1", partition=0)
    box.add("changelog", b"b0", b"1", partition=2)  # a partition with one record only
    asyncio.run(box.send(last_alone=True))
    sent = [(p, [r[0] for r in recs], rnd) for (_, p, recs), rnd
            in zip(app.aio.sent, app.aio.rounds, strict=True)]
    assert sent[0] == (0, [b"a0", b"a1", b"a2", b"a3"], 0)
    # The last records go in batches of their own, after the first round was awaited.
    assert sorted(sent[1:]) == [(0, [b"a4"], 1), (2, [b"b0"], 1)]


class _ChangelogTopic:
    def get_topic_name(self) -> str:
        return "changelog"


class _Table:
    """What store_states uses of a Faust table: its app, contents, changelog and partitions."""

    def __init__(self, app: _App) -> None:
        self.app = app
        self.data: dict[bytes, Any] = {}
        self.changelog_topic = _ChangelogTopic()

    def partition_for_key(self, key: bytes) -> int:
        return _kafka_partition(key)


def test_store_states_ends_every_changelog_partition_with_a_batch_of_one_record() -> None:
    # Tansu answers a partition's end offset as its last batch's first offset + 1, so a
    # changelog whose last batch held several records (here: a rebase's tombstones) would
    # look shorter than what a standby had already read of it: the CI failure of stop 19,
    # Faust's ConsistencyError "persisted offset ... is higher than ... highwater".
    from thurrock_streams.agents.readings import store_states
    from thurrock_streams.engine.chain import delta_key

    app = _App()
    table = _Table(app)
    records = {b"site-%d" % i: b"state" for i in range(12)}
    tombstones = [delta_key(b"site-%d" % i, s) for i in range(12) for s in range(1, 6)]
    asyncio.run(store_states(table, records, tombstones=tombstones))
    assert table.data == records
    last: dict[int, int] = {}  # partition -> record count of its last batch
    got: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for _, p, recs in app.aio.sent:
        last[p] = len(recs)
        got.setdefault(p, []).extend((k, v) for k, v, _ in recs)
    assert set(last.values()) == {1}
    for p in range(PARTITIONS):
        mine = [(k, v) for k, v in records.items() if _kafka_partition(k) == p]
        dead = [(k, None) for k in tombstones if _kafka_partition(k) == p]
        # Records first, tombstones after them, nothing lost or repeated.
        assert got.get(p, []) == mine + dead


def test_murmur2_many_is_kafkas_murmur2_for_keys_of_every_length() -> None:
    import numpy as np

    from thurrock_streams.agents.produce import murmur2_many

    rng = np.random.default_rng(20261202)
    keys = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8))
            for n in rng.integers(0, 70, 3000)]
    keys += [b"", b"\x00", b"\xff" * 4, b"\xff" * 7, "Tilbury-Dock-Rd-ñ".encode()]
    assert murmur2_many(keys).tolist() == [murmur2(k) for k in keys]  # aiokafka's, per key


def test_partitioner_many_gives_each_keys_default_partition_within_its_bound() -> None:
    from thurrock_streams.agents.produce import Partitioner

    keys = [b"site-%d" % (i % 250) for i in range(1000)]
    part = Partitioner(PARTITIONS, max_keys=100)
    assert part(b"site-3") == _kafka_partition(b"site-3")
    assert part.many(keys) == [_kafka_partition(k) for k in keys]
    assert len(part._of) == 250  # passing the bound cleared it; this call's keys are kept
    more = [b"other-%d" % i for i in range(60)]
    assert part.many(more + keys[:3]) == [_kafka_partition(k) for k in more + keys[:3]]
    assert len(part._of) == 63  # cleared again: only the last call's keys
