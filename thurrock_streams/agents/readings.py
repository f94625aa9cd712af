"""The Faust wiring of a readings pipeline: one agent, one changelog-backed table, a timer.

The agent takes whole fetched batches from its :class:`~.lane.Lane`, hands their bytes to
a :class:`Processor` and delivers what it returns in a crash-safe order: dead letters,
re-keyed messages and aggregates are sent and their delivery awaited; only then are the
changed site states written to the table, and the step waits until the changelog holds
them (:func:`store_states`) before it ends and the lane marks its offsets committable.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from ..engine import chain
from ..engine.chain import site_of_key
from ..engine.processor import Pipeline, Processor, SiteState, StepOutput
from ..readings import RawMessage
from ..settings import Settings
from ..topics import ORIGIN_KEY, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC
from .lane import Lane, owned_tps, retry, tables_ready
from .produce import Outbox, Partitioner, partition_for, shared_partitioner

__all__ = ["ReadingsAgent", "partition_for"]

log = logging.getLogger(__name__)

#: A high watermark counts only from a fetch this recent (ms): the lane's fetches wait at
#: most 0.1 s, so an older one means fetching has stalled (or the partition is paused).
FRESH_FETCH_MS = 4000.0

#: Header with the wall-clock time (UTC epoch seconds) at which an aggregate was closed.
CLOSED_AT = "thurrock-closed-at"


async def retry_kafka(send: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``send`` until Kafka takes it, backing off up to 30 s between tries.

    Faust wraps a failed send in ``ProducerSendError``: retried too, since giving up would
    let the batch's offsets be committed undelivered (a record Kafka can never take stalls its
    partition, with a warning each try, rather than being lost).
    """
    await retry(send, f"{what}: delivery to Kafka", (KafkaError, ProducerSendError))


async def store_states(table: Any, records: Mapping[bytes, bytes],
                       entries: Mapping[bytes, Any] | None = None,
                       tombstones: Iterable[bytes] = ()) -> None:
    """Put records in a table and return once its changelog holds them (acks=all).

    Faust commits source offsets without waiting for the changelog records that table
    writes leave in its producer buffer; a ``kill -9`` could then keep offsets newer than
    the stored states, and the replay would miss readings. Awaiting the records here,
    before the step ends and the lane marks its offsets committable, keeps the order
    outputs → states → offsets. Rewriting a record is harmless, so a failed try is simply
    repeated.

    ``entries`` (site key -> what the table holds for it), when given, are put in the
    table instead of the records themselves: a site table of state chains holds one
    entry per site, the records folded (:mod:`..engine.chain`). ``tombstones`` (keys) are
    sent only once every record is stored: they let compaction drop records the new ones
    made obsolete, and must never reach the log before those.

    The records go straight to the producer, all of a step's at once, not through Faust's
    ``send_changelog`` (its buffer sends one record at a time, ≈120 µs each, and holds
    at most 100: docs/performance.md). The tables keep their contents in memory, so
    Faust's callback for sent changelog records (which notes offsets for on-disk stores)
    has nothing to do here.

    The last record of each changelog partition is sent on its own, after the others
    (:meth:`.Outbox.send`, ``last_alone``), and so is the last tombstone: a broker whose
    end offset is the last record *batch*'s first offset + 1 (Tansu, the local stack's
    broker) would otherwise hide the tail of that batch from recovery. (A worker killed
    between the two sends still leaves such a tail; a standby that read it then stands
    past the reported end, which is why the app turns Faust's consistency check off.)
    """
    if entries is None:
        for key, value in records.items():
            table.data[key] = value  # the table's contents; the changelog record follows
    else:
        for key, entry in entries.items():
            table.data[key] = entry
    box = Outbox(table.app)
    topic = table.changelog_topic.get_topic_name()
    for key, value in records.items():
        box.add(topic, key, value, partition=table.partition_for_key(key))
    await box.send(last_alone=True)
    if tombstones:
        dead = Outbox(table.app)
        for key in tombstones:
            dead.add(topic, key, None, partition=table.partition_for_key(key))
        await dead.send(last_alone=True)


class QuietClock:
    """Seconds of silence per site, counted only up to what the worker has processed.

    Each second the worker notes, per partition it holds, Kafka's high watermarks of the
    site topics (the readings topic and its re-key topic) as of a fetch of the last few
    seconds. Once it has processed every message below a note's offsets, the note's time
    is that partition's *cut*: nothing sent before it is still waiting. A site's quiet time
    is the cut (the oldest of all the partitions this worker holds, so that a site's
    reading still waiting on another partition under a wrong key holds it back too) minus
    when the worker last processed a message of that site, or took its partitions over.
    A backlog, a stalled fetch, a restart or a rebalance is so no silence (CONTRACT.md §3),
    while a site on a partition busy with others still goes quiet. Times: monotonic s.
    """

    def __init__(self, idle_s: float, max_notes: int = 3600) -> None:
        self.idle_s = idle_s
        self.max_notes = max_notes
        self.notes: dict[int, collections.deque[tuple[float, dict[Any, int]]]] = {}
        self.cuts: dict[int, float] = {}
        self.heard_at: dict[str, float] = {}
        self.before: dict[str, float] = {}
        self.since = time.monotonic()

    def reset(self, now: float) -> None:
        """A takeover at ``now``: the silence counted so far is kept aside (:meth:`keep`
        says for which partitions it still holds); the time until the new notes is none."""
        cuts = list(self.cuts.values())
        cut = min(cuts) if cuts else -math.inf
        self.before = {site: max(0.0, cut - self.heard_at.get(site, self.since))
                       + self.before.get(site, 0.0)
                       for site in {*self.heard_at, *self.before}}
        self.notes.clear()
        self.cuts.clear()
        self.heard_at.clear()
        self.since = now

    def keep(self, kept: Callable[[str], bool]) -> None:
        """Keep the silence counted before the takeover only for the sites ``kept`` (their
        partition stayed with this worker: no message of theirs went elsewhere)."""
        self.before = {site: q for site, q in self.before.items() if kept(site)}

    def note(self, partition: int, now: float, highs: dict[Any, int]) -> None:
        """Kafka held offsets below ``highs`` (per topic-partition) at ``now``."""
        q = self.notes.setdefault(partition, collections.deque(maxlen=self.max_notes))
        q.append((now, highs))

    def processed(self, partition: int, due: dict[Any, int]) -> None:
        """The worker has processed every offset below ``due`` (per topic-partition)."""
        q = self.notes.get(partition)
        while q and all(due.get(tp, -1) >= high for tp, high in q[0][1].items()):
            self.cuts[partition] = q.popleft()[0]

    def heard(self, site: str, now: float) -> None:
        """A message of the site was processed at ``now``."""
        self.heard_at[site] = now
        self.before.pop(site, None)

    def cut(self, partitions: Iterable[int]) -> float:
        """The oldest cut of ``partitions`` (monotonic s; -inf when one has none yet)."""
        cuts = [self.cuts.get(p, -math.inf) for p in partitions]
        return min(cuts) if cuts else -math.inf

    def quiet_s(self, site: str, partitions: Iterable[int], cut: float | None = None) -> float:
        """The site's silence so far, seconds (0 when none is known); ``cut``: the
        partitions' :meth:`cut`, when the caller has it already."""
        if cut is None:
            cut = self.cut(partitions)
        return max(0.0, cut - self.heard_at.get(site, self.since)) + self.before.get(site, 0.0)

    def recent(self, cut: float) -> set[str]:
        """The sites heard from within ``idle_s`` before ``cut``: not quiet, whatever else."""
        after = cut - self.idle_s
        return {site for site, t in self.heard_at.items() if t > after}

    def quiet_sites(self, partitions: Iterable[int]) -> int:
        """How many of the sites heard of by this worker are quiet now."""
        cut = self.cut(partitions)
        recent = self.recent(cut)
        return sum(self.quiet_s(site, (), cut) >= self.idle_s
                   for site in {*self.heard_at, *self.before} if site not in recent)


def owned_partitions(app: Any, topics: Iterable[str]) -> set[int]:
    """The partitions of ``topics`` this worker holds as active (not as a standby).

    A table also holds standby copies of other workers' partitions; a timer must act only
    on the sites of its own, or two workers would write the same site's windows.
    """
    return {p for _, p in owned_tps(app, topics)}


class LoopLock:
    """A lock serialising an agent's steps and timers, created on the running loop."""

    _lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """The agent's lock."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock


class SiteTable(faust.Table):
    """A table keyed by site_id whose changelog partition is the site's Kafka partition.

    Faust would write a table key to the partition of the event being processed; a
    site's state must live in the partition its readings hash to, whichever topic or
    timer wrote it, so that the worker owning the readings also owns the state. A key
    may carry a suffix after a ``\\x00`` (a delta record's, :mod:`..engine.chain`): the
    partition is the site id's.
    """

    _partitioner: Partitioner | None = None

    def partition_for_key(self, key: Any) -> int:
        part = self._partitioner
        if part is None:
            part = self._partitioner = shared_partitioner(
                self.partitions or self.app.conf.topic_partitions)
        return part(site_of_key(key))


class StateChainTable(SiteTable):
    """A site table whose changelog holds each site as a base record and deltas.

    Recovery and standbys fold the records (:func:`..engine.chain.fold`) into one entry per
    site, the tuple of its current records: ``keys()``, ``len`` and ``get`` see sites only.
    """

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        store: Any = self.data  # Faust's memory store (the app's store is memory://)
        data = store.data
        key_partition = store._key_partition  # as the memory store keeps it
        for event in batch:
            m = event.message
            site = chain.fold(data, m.key, m.value)
            if site in data:
                key_partition[site] = m.partition
            else:
                key_partition.pop(site, None)


def table_dict(table: Any) -> Mapping[bytes, Any]:
    """What a site table holds, as the dict its memory store keeps (the app's store is
    ``memory://``): reading it directly skips Faust's ``Mapping.get``, which raises and
    catches a KeyError for every site not seen before. A plain mapping standing in for the
    table (unit tests) is itself."""
    inner = getattr(getattr(table, "data", None), "data", None)
    return inner if isinstance(inner, dict) else table


class _States(Mapping[str, SiteState]):
    """The table seen as decoded site states, decoding each stored entry once."""

    def __init__(self, owner: ReadingsAgent) -> None:
        self._owner = owner
        self._stored = table_dict(owner.table)  # made per step: the store's dict stays put

    def __getitem__(self, site: str) -> SiteState:
        state = self.get(site)
        if state is None:
            raise KeyError(site)
        return state

    def get(self, site: str, default: Any = None) -> Any:
        # The memory store's dict itself: Mapping.get through the table and its store
        # raises and catches a KeyError for each site not seen before (a Faust table's
        # reads only add a sensor call).
        raw = self._stored.get(site.encode())
        if raw is None:
            return default
        cached = self._owner.cache.get(site)
        if cached is not None and cached[0] is raw:
            return cached[1]
        state = chain.decode_entry(raw)
        self._owner.cache[site] = (raw, state)
        return state

    def __contains__(self, site: object) -> bool:
        return isinstance(site, str) and site.encode() in self._stored

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in list(self._owner.table.keys()))

    def __len__(self) -> int:
        return len(self._owner.table)


def _forwarded(m: Any) -> RawMessage:
    """A message of the re-key topic as the original it forwards (its headers name it)."""
    h = {k: v for k, v in (m.headers or [])}
    key = h.get(ORIGIN_KEY)  # the original key; None when it had none
    return RawMessage(h[ORIGIN_TOPIC].decode(), int(h[ORIGIN_PARTITION]),
                      int(h[ORIGIN_OFFSET]), key, m.value, forwarded=True)


class ReadingsAgent(LoopLock):
    """Binds one pipeline (traffic or air) to the app."""

    def __init__(self, app: faust.App, settings: Settings, pipeline: Pipeline, source: str,
                 aggregates: str, deadletter: str) -> None:
        self.app = app
        self.settings = settings
        self.kind = pipeline.kind
        n = settings.topic_partitions
        self.partitions = n
        self.processor = Processor(pipeline, partitions_of=self._partitions_of)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        src = settings.topic(source)
        rekey = f"{settings.group_id}-{source}-rekey"
        self.sources = app.topic(src, rekey, partitions=n, internal=True, **raw)
        self.rekey_out = app.topic(rekey, partitions=n, internal=True, **raw)
        self.aggregates_out = app.topic(settings.topic(aggregates), partitions=n,
                                        internal=True, **raw)
        self.deadletter_out = app.topic(settings.topic(deadletter), partitions=n,
                                        internal=True, **raw)
        self.table: Any = app.tables.add(StateChainTable(
            app, name=f"{self.kind}-sites", partitions=n,
            key_type=bytes, value_type=bytes,  # bytes -> Faust's "raw" codec, both ways
            help=f"{self.kind} site states (windows, watermark, applied offsets)"))
        self.cache: dict[str, tuple[Any, SiteState]] = {}
        self.chains: dict[str, chain.Chain] = {}  # per site: what its next record follows
        self.quiet = QuietClock(settings.idle_flush_s)
        self.quiet_now = 0  # quiet sites at the last check, for /counters
        self.cut_lag_s = math.inf  # how far back silence is known to hold (s)
        self._partitioner = shared_partitioner(n)  # the site topics' partition of a key
        # per site not heard of since the takeover: where its running watermark had got to
        self._carry: dict[str, float] = {}
        self._owned_now: set[int] = set()
        self._owned_before: set[int] | None = None
        # Up to 50,000 messages a batch: with thousands of sites sending single readings,
        # the fixed cost of a step per site (state copy, windows, one changelog record)
        # is shared by several readings instead of one. A batch of large frames is stepped
        # in chunks of at most ``step_max_bytes`` of values, which bounds the step's
        # memory and duration (docs/performance.md).
        self.batch_max = 50_000
        self.step_max_bytes = 4 << 20
        # The source topics' batches, whole, and their offsets.
        self.lane = Lane(app, self.kind, self.sources.topics)
        app.agent(self.sources, name=f"{self.kind}-readings")(self._run)
        app.timer(interval=1.0, name=f"{self.kind}-quiet-sites")(self._quiet_sites)
        app.on_partitions_assigned.connect(self._on_assigned)

    def _partition_of(self, site: str) -> int:
        return self._partitioner(site.encode())

    def _partitions_of(self, sites: list[str]) -> list[int]:
        return self._partitioner.many([site.encode() for site in sites])

    async def _on_assigned(self, *args: Any, **kwargs: Any) -> None:
        # Quiet time counts from the takeover: a restart or a rebalance is no silence.
        self.quiet.reset(time.monotonic())
        self._carry.clear()
        self._owned_before = self._owned_now

    async def _run(self, stream: Any) -> None:
        # Faust's stream stays empty: the lane hands over the source topics' batches.
        async for take in self.lane.takes(self.batch_max):
            await self.lane.run(take, self._step_messages)

    async def _step_messages(self, messages: list[Any]) -> None:
        rekey = self.rekey_out.get_topic_name()
        await self.step_chunks([
            _forwarded(m) if m.topic == rekey
            else RawMessage(m.topic, m.partition, m.offset, m.key, m.value)
            for m in messages])

    async def step_chunks(self, messages: list[RawMessage]) -> None:
        """Step a batch in arrival order, in chunks of at most ``step_max_bytes``.

        Each chunk is a whole step (outputs delivered, then states stored) before the
        next begins, exactly as if Faust had handed over smaller batches.
        """
        start, size = 0, 0
        for i, m in enumerate(messages):
            size += len(m.value or b"")
            if size > self.step_max_bytes and i > start:
                await self.step(messages[start:i])
                start, size = i, len(m.value or b"")
        if start < len(messages):
            await self.step(messages[start:])

    async def step(self, messages: list[RawMessage]) -> None:
        """Process one batch and deliver its outputs (the agent's body)."""
        async with self.lock:
            out = self._process(messages, time.time())
            await self._deliver(out)
            now = time.monotonic()
            for site in out.changed:
                self.quiet.heard(site, now)

    def _process(self, messages: list[RawMessage], now: float) -> StepOutput:
        return self.processor.step_isolating(messages, _States(self), now)

    def _highs(self, partition: int) -> dict[Any, int] | None:
        """Kafka's high watermarks of the site partition's topics from a fetch of the last
        few seconds (the lane's), or None (unknown, or the fetch stalled: no silence is
        counted)."""
        highs: dict[Any, int] = {}
        now_ms = time.time() * 1000.0
        for topic in self.sources.topics:
            got = self.lane.high(topic, partition)
            if got is None or now_ms - got[1] > FRESH_FETCH_MS:
                return None
            highs[(topic, partition)] = got[0]
        return highs

    def _due(self, partition: int) -> dict[Any, int] | None:
        """Per topic-partition, the offset below which every message is processed, once
        known (the lane knows it from where the partition started and each step done)."""
        due = {}
        for topic in self.sources.topics:
            d = self.lane.processed(topic, partition)
            if d is None:
                return None
            due[(topic, partition)] = d
        return due

    async def _quiet_sites(self) -> None:
        """Run a quiet site's watermark on with the clock (CONTRACT.md §3)."""
        if not tables_ready(self.app):
            return
        async with self.lock:
            now = time.monotonic()
            mine = owned_partitions(self.app, self.sources.topics)
            if self._owned_before is not None:  # the first check since a takeover
                kept = self._owned_before & mine
                self.quiet.keep(lambda site: self._partition_of(site) in kept)
                self._owned_before = None
            self._owned_now = mine
            for p in mine:
                highs = self._highs(p)
                if highs is not None:
                    self.quiet.note(p, now, highs)
                due = self._due(p)
                if due is not None:
                    self.quiet.processed(p, due)
            self.quiet_now = self.quiet.quiet_sites(mine)
            cut = self.quiet.cut(mine)
            self.cut_lag_s = now - cut if mine else 0.0
            states = _States(self)
            merged = StepOutput()
            # A site heard from within the idle time is neither quiet nor running on (its
            # base is its watermark): most sites of a busy feed, skipped without a look.
            recent = self.quiet.recent(cut)
            for site in list(states):
                if site in recent or self._partition_of(site) not in mine:
                    continue  # not quiet, or a standby copy of another worker's site
                quiet = self.quiet.quiet_s(site, (), cut)
                state = states[site]
                w = state.windows.watermark
                if site in self.quiet.heard_at or site in self.quiet.before:
                    base = w  # its quiet time, since the takeover or before, is known
                else:  # carry on from where the watermark had run to before it
                    base = self._carry.setdefault(site, max(w, state.windows.run_to))
                if quiet < self.settings.idle_flush_s and not base > w:
                    continue
                out = self.processor.run_on(site, state, base + quiet)
                merged.aggregates += out.aggregates
                merged.changed.update(out.changed)
            if merged.changed:
                await self._deliver(merged)

    async def _deliver(self, out: StepOutput) -> None:
        await retry_kafka(lambda: self._send(out), self.kind)
        records: dict[bytes, bytes] = {}
        entries: dict[bytes, chain.Entry] = {}
        tombstones: list[bytes] = []
        data = table_dict(self.table)
        for site, state in out.changed.items():
            key = site.encode()
            before = self.chains.get(site)
            entry = data.get(key)  # the memory store's dict (no KeyError raised per new site)
            if entry is None:
                before = None
            elif before is None or before.entry is not entry:  # recovered, or a standby's
                cached = self.cache.get(site)
                old = cached[1] if cached is not None and cached[0] is entry \
                    else chain.decode_entry(entry)
                before = chain.chain_of(entry, old)
            recs, tombs, after = chain.write(key, state, before)
            records.update(recs)
            tombstones += tombs
            entries[key] = after.entry
            self.chains[site] = after
            self.cache[site] = (after.entry, state)
        await retry_kafka(lambda: store_states(self.table, records, entries, tombstones),
                          self.kind)

    async def _send(self, out: StepOutput) -> None:
        """Send a step's outputs and wait until Kafka holds them all.

        Straight to the producer (a step may close thousands of windows): Faust's
        ``Topic.send`` adds a message object, sensors and callbacks per record, and the
        partition is the producer's default for the key either way.
        """
        box = Outbox(self.app)
        dead = self.deadletter_out.get_topic_name()
        for key, rec in out.deadletters:
            box.add(dead, key, orjson.dumps(rec))
        rekey = self.rekey_out.get_topic_name()
        for site, m in out.rekey:
            headers = [(ORIGIN_TOPIC, m.topic.encode()),
                       (ORIGIN_PARTITION, str(m.partition).encode()),
                       (ORIGIN_OFFSET, str(m.offset).encode())]
            if m.key is not None:
                headers.append((ORIGIN_KEY, m.key))
            box.add(rekey, site.encode(), m.value, headers)
        closed_at = [(CLOSED_AT, repr(time.time()).encode())]
        aggregates = self.aggregates_out.get_topic_name()
        for site, rec in out.aggregates:
            box.add(aggregates, site.encode(), orjson.dumps(rec), closed_at)
        await box.send()
