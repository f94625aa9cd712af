"""The Faust wiring of alerting: the alert agent and the notifier agent (CONTRACT.md §6).

The **alert agent** reads the aggregates topics, runs the :class:`AlertEngine` per site
and writes events to the ``alerts`` topic. Its per-site state (open alerts, rule
counters, and the offset of the last aggregate applied from each source partition) lives
in a changelog-backed table keyed like the aggregates, so the worker that owns a site's
aggregates owns its alert state. The order is the readings agents' order: events are
sent and their delivery awaited, then the states are stored, then the lane marks the
offsets committable. A
replayed aggregate that a stored state already applied is skipped, so a restart never
raises an open alert again; one that it did not apply reproduces the same event
(the same point in the store; at worst a repeated message on the topic).

The **notifier agent** reads the ``alerts`` topic and hands each event to the
:class:`~thurrock_streams.alerts.notify.Dispatcher`, which delivers it to every notifier
in the background with retries. An event's offset becomes committable only when every
notifier delivered it (or gave up on it for good) and every earlier one of its partition
did, so Kafka keeps what is undelivered across a crash, and a notifier that is down
delays nothing but itself.
"""

from __future__ import annotations

import functools
import heapq
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition

from ..alerts.engine import AlertEngine, SiteAlerts
from ..alerts.notify import Dispatcher
from ..alerts.rules import Rules
from ..settings import Settings
from ..topics import AIR_AGGREGATES, ALERTS, TRAFFIC_AGGREGATES
from .lane import Lane, Take, tables_ready
from .produce import send_records
from .readings import (
    LoopLock,
    SiteTable,
    owned_partitions,
    retry_kafka,
    store_states,
    table_dict,
)

__all__ = ["AckGate", "AlertAgent", "AlertCounters", "NotifyAgent", "changed_records",
           "quiet_s"]

log = logging.getLogger(__name__)

def quiet_s(idle_flush_s: float) -> float:
    """Wall-clock seconds without a new window from a site before it may be called
    silent: past the idle flush that writes its last windows, and never under 30 s."""
    return max(30.0, idle_flush_s + 5.0)


def _newest_other(top2: list[float], own: float) -> float:
    """The newest window of the *other* sites, from a group's two newest (ascending)."""
    if len(top2) < 2:
        return -float("inf")
    return top2[0] if top2[1] == own else top2[1]


class AlertCounters:
    """What the alert agent did since the process started."""

    def __init__(self) -> None:
        self.records: int = 0
        self.unreadable: int = 0
        self.replayed_skipped: int = 0
        self.states_unchanged: int = 0  # states not stored: only their offsets moved
        self.events: dict[str, int] = {}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {"records": self.records, "unreadable": self.unreadable,
                "replayed_skipped": self.replayed_skipped,
                "states_unchanged": self.states_unchanged, "events": dict(self.events)}


class AlertAgent(LoopLock):
    """Aggregates in, alert events out; state in the ``alert-sites`` table."""

    def __init__(self, app: faust.App, settings: Settings, rules: Rules) -> None:
        self.app = app
        self.settings = settings
        self.engine = AlertEngine(rules)
        self.counters = AlertCounters()
        n = settings.topic_partitions
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.kind_of = {settings.topic(TRAFFIC_AGGREGATES): "traffic",
                        settings.topic(AIR_AGGREGATES): "air"}
        self.sources = app.topic(*self.kind_of, partitions=n, internal=True, **raw)
        self.alerts_out = app.topic(settings.topic(ALERTS), partitions=n, internal=True, **raw)
        #: Sends (key, value) event records, returning once Kafka holds them all.
        self.send_events: Callable[[list[tuple[bytes | None, bytes]]], Awaitable[None]] = \
            lambda records: send_records(app, self.alerts_out.get_topic_name(), records)
        self.table: Any = app.tables.add(SiteTable(
            app, name="alert-sites", partitions=n, key_type=bytes, value_type=bytes,
            help="alert state per site (open alerts, rule counters, applied offsets)"))
        # For sensor_silent: the newest window end (UTC epoch s) per kind and site of the
        # sites this worker owns, rebuilt from the table after each rebalance; and when
        # (monotonic s) a newer window of each site last came in.
        self.newest: dict[str, dict[str, float]] = {}
        self.last_rx: dict[str, float] = {}
        self.quiet_s = quiet_s(settings.idle_flush_s)
        self._assigned_at = time.monotonic()
        self._index_stale = True
        self.lane = Lane(app, "alerts", self.kind_of)
        app.agent(self.sources, name="alerts")(self._run)
        app.timer(interval=2.0, name="alerts-silent")(self._silent_timer)
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, *args: Any, **kwargs: Any) -> None:
        self._index_stale = True
        self._assigned_at = time.monotonic()
        self.last_rx.clear()

    async def _silent_timer(self) -> None:
        """Check for silent sites (the only place: a site is silent only after
        :func:`quiet_s` of wall-clock time, which a 2-second timer catches)."""
        if not tables_ready(self.app):
            return
        async with self.lock:
            if self._index_stale:
                self._rebuild_index()
            changed: dict[str, SiteAlerts] = {}
            events = self._silent(changed, time.monotonic())
            if events:
                self._count(events)
                await self._deliver(events, changed)

    async def _run(self, stream: Any) -> None:
        async for take in self.lane.takes(5000):
            await self.lane.run(take, self._step_messages)

    async def _step_messages(self, messages: list[Any]) -> None:
        await self.step([(m.topic, m.partition, m.offset, m.value) for m in messages])

    async def step(self, messages: list[tuple[str, int, int, bytes | None]]) -> None:
        """Evaluate a batch of aggregate records, deliver the events, store the states."""
        async with self.lock:
            events, changed = self.process(messages)
            await self._deliver(events, changed)

    def _load(self, site: str) -> SiteAlerts:
        raw = table_dict(self.table).get(site.encode())  # no KeyError per new site
        return SiteAlerts() if raw is None else SiteAlerts.from_json(orjson.loads(raw))

    def _rebuild_index(self) -> None:
        self.newest = {}
        mine = owned_partitions(self.app, self.kind_of)
        for key in list(self.table.keys()):
            site = key.decode()
            if self.table.partition_for_key(key) not in mine:
                continue  # a standby copy of another worker's site
            for kind, ts in self._load(site).seen.items():
                self.newest.setdefault(kind, {})[site] = ts
        self._index_stale = False

    def process(self, messages: list[tuple[str, int, int, bytes | None]]
                ) -> tuple[list[dict[str, Any]], dict[str, SiteAlerts]]:
        """The events of a batch and the states it changed (not yet stored)."""
        if self._index_stale:
            self._rebuild_index()
        events: list[dict[str, Any]] = []
        changed: dict[str, SiteAlerts] = {}
        now = time.monotonic()
        counters, evaluate, kind_of = self.counters, self.engine.evaluate, self.kind_of
        srcs: dict[tuple[str, int], str] = {}
        for topic, partition, offset, value in messages:
            kind = kind_of.get(topic, "air")
            try:
                rec = orjson.loads(value or b"")
                site = str(rec["site_id"])
                ts = float(rec["ts"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                counters.unreadable += 1
                log.error("alerts: unreadable aggregate at %s:%d@%d", topic, partition, offset)
                continue
            st = changed.get(site) or self._load(site)
            src = srcs.get((topic, partition))
            if src is None:
                src = srcs[topic, partition] = f"{topic}:{partition}"
            if offset <= st.applied.get(src, -1):
                counters.replayed_skipped += 1
                continue
            st.applied[src] = offset
            counters.records += 1
            try:
                events += evaluate(site, st, kind, rec)
            except (KeyError, TypeError, ValueError) as exc:
                counters.unreadable += 1
                log.error("alerts: cannot evaluate %s:%d@%d: %r", topic, partition, offset, exc)
            changed[site] = st
            seen = st.seen.get(kind)
            if seen is not None:
                if seen == ts:  # a newer window of this site
                    self.last_rx[site] = now
                newest = self.newest.get(kind)
                if newest is None:
                    newest = self.newest[kind] = {}
                newest[site] = seen
        self._count(events)
        return events, changed

    def _count(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            self.counters.events[ev["state"]] = self.counters.events.get(ev["state"], 0) + 1

    def _silent(self, changed: dict[str, SiteAlerts], now: float) -> list[dict[str, Any]]:
        """Raise ``sensor_silent`` for sites lagging the others of their kind.

        Two conditions, so that neither a replay nor a catch-up that reads partitions
        unevenly raises anything: in event time, the site's newest window is more than
        ``after_s`` behind the newest window of the other sites of its kind that this
        worker owns; and in wall-clock time, no newer window of the site has come in for
        :func:`quiet_s` (a site that is only behind in processing keeps getting windows).
        """
        after = self.engine.rules.silent_after_s
        events: list[dict[str, Any]] = []
        if after is None:
            return events
        for kind in sorted(self.newest):
            seen = self.newest[kind]
            if len(seen) < 2:
                continue  # "while others report": a lone site is never silent
            top2 = sorted(seen.values())[-2:]
            for site, ts in seen.items():
                ref = _newest_other(top2, ts)
                if ref - ts <= after:
                    continue
                if now - self.last_rx.get(site, self._assigned_at) < self.quiet_s:
                    continue
                st = changed.get(site) or self._load(site)
                if "sensor_silent" in st.open:
                    continue
                ev = self.engine.silent(site, st, kind, ref)
                if ev:
                    events += ev
                    changed[site] = st
        return events

    async def _deliver(self, events: list[dict[str, Any]],
                       changed: dict[str, SiteAlerts]) -> None:
        """Send the events, then store the states (see :func:`store_states`): all of a
        step's at once, awaited before the lane marks its offsets committable. A state
        that differs from the stored one only in its applied offsets is not stored
        (:func:`changed_records`)."""
        if events:
            # One produce, straight to the producer, not through Faust's one-by-one buffer,
            # which stops every agent while more than 100 records wait (after an outage,
            # thousands of sites can fall silent in one step).
            sent = [(ev["site_id"].encode(), orjson.dumps(ev)) for ev in events]
            await retry_kafka(lambda: self.send_events(sent), "alerts")
        records = changed_records(table_dict(self.table).get, changed)
        self.counters.states_unchanged += len(changed) - len(records)
        if records:
            await retry_kafka(lambda: store_states(self.table, records), "alerts")


_APPLIED = b',"applied":'


def changed_records(stored: Callable[[bytes], bytes | None],
                    states: dict[str, SiteAlerts]) -> dict[bytes, bytes]:
    """The table records of the states that changed more than their applied offsets.

    A step's aggregates of a site that moved no rule, no open alert and no newest window
    (a 15-minute traffic window, an air mean no rule reads, an hourly ``daqi`` record)
    leave the state as stored but for the offsets applied; storing it only to move those
    changes nothing a replay could see: replayed from the stored state, the same
    aggregates again change nothing and raise nothing (an event always changes the open
    alerts). So such a state is not written. Exact by construction: the record is left
    out only when its bytes before ``"applied"`` (the last key of
    :meth:`SiteAlerts.to_json`; no topic name holds a quote) equal the stored record's.
    """
    records: dict[bytes, bytes] = {}
    for site, st in states.items():
        key = site.encode()
        value = orjson.dumps(st.to_json())
        old = stored(key)
        if old is not None:
            i, j = old.rfind(_APPLIED), value.rfind(_APPLIED)
            if i > 0 and i == j and old[:i] == value[:j]:
                continue
        records[key] = value
    return records


@dataclass
class _Entry:
    """One alert event being delivered: what makes its offset committable (and that of any
    copy handed in meanwhile)."""

    acks: list[Callable[[], Any]]
    done: bool = False
    withdrawn: bool = False


class AckGate:
    """Acknowledges each partition's events in offset order, once delivered.

    A partition's committed offset says that everything below it is done, so an event
    still being delivered must not be passed by the acknowledgement of a later one: a
    crash would then lose it. :meth:`withdraw_all` (a rebalance starts) forgets every
    event not yet acknowledged without acknowledging it: its offset is not committed, and
    it is delivered by whichever worker holds its partition after the rebalance.

    From a withdrawal until :meth:`reopen` (the next assignment) the gate is closed: an
    event handed in meanwhile is neither delivered nor acknowledged.

    Thread-safe: Faust runs the rebalance callback on the consumer's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], dict[int, _Entry]] = {}
        self._heaps: dict[tuple[str, int], list[int]] = {}
        self._closed = False

    def reopen(self) -> None:
        """Take events again (partitions were assigned)."""
        with self._lock:
            self._closed = False

    def add(self, topic: str, partition: int, offset: int,
            ack: Callable[[], Any]) -> _Entry | None:
        """Register an event and return its entry to deliver; None if one at that offset
        waits already (then ``ack`` joins it), or if the gate is closed (then ``ack`` is
        never called: the offset stays uncommitted)."""
        tp = (topic, partition)
        with self._lock:
            if self._closed:
                return None
            waiting = self._entries.setdefault(tp, {})
            entry = waiting.get(offset)
            if entry is not None:
                entry.acks.append(ack)
                return None
            entry = waiting[offset] = _Entry([ack])
            heapq.heappush(self._heaps.setdefault(tp, []), offset)
            return entry

    def done(self, topic: str, partition: int, offset: int, entry: _Entry) -> None:
        """The event is delivered: acknowledge it and the delivered ones after it, up to
        the first still waiting."""
        tp = (topic, partition)
        acks: list[Callable[[], Any]] = []
        with self._lock:
            if entry.withdrawn:
                return
            entry.done = True
            waiting, heap = self._entries.get(tp, {}), self._heaps.get(tp, [])
            while heap and waiting[heap[0]].done:
                acks += waiting.pop(heapq.heappop(heap)).acks
        for ack in acks:
            ack()

    def withdraw_all(self) -> int:
        """Forget every event not yet acknowledged, without acknowledging it, and close the
        gate until :meth:`reopen`; return how many."""
        with self._lock:
            self._closed = True
            entries = [e for waiting in self._entries.values() for e in waiting.values()]
            self._entries.clear()
            self._heaps.clear()
            for e in entries:
                e.withdrawn = True
        return len(entries)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._entries.values())


class NotifyAgent:
    """Hands every alert event to the notifiers; its offset is committable once they all
    have it.

    Offsets become committable in offset order per partition (:class:`AckGate`): one
    still being delivered holds back those after it. So that a notifier that is down
    cannot hold a rebalance up, the events still waiting are withdrawn when one starts
    (:meth:`release_all`): their offsets stay uncommitted, so Kafka delivers them again to
    whichever worker holds their partition next, and they are no longer retried here. A
    notification may so be sent twice (at least once, never lost); receivers drop
    repeats by the event id (docs/alerts.md).
    """

    def __init__(self, app: faust.App, settings: Settings, dispatcher: Dispatcher) -> None:
        self.app = app
        self.dispatcher = dispatcher
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(settings.topic(ALERTS), partitions=settings.topic_partitions,
                                internal=True, **raw)
        self.gate = AckGate()
        self.withdrawn = 0
        self.lane = Lane(app, "alert-notify", [self.source.get_topic_name()])
        app.agent(self.source, name="alert-notify")(self._run)
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, *args: Any, **kwargs: Any) -> None:
        self.gate.reopen()

    async def _run(self, stream: Any) -> None:
        async for take in self.lane.takes(1000):
            # The gate, not the step's end, makes each offset committable.
            await self.lane.run(take, functools.partial(self._submit_take, take), commit=False)

    async def _submit_take(self, take: Take, messages: list[Any]) -> None:
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            self.submit(m, functools.partial(self.lane.ack, tp, m.offset + 1, take.epoch))

    def submit(self, m: Any, ack: Callable[[], Any]) -> None:
        """Hand one alert event to the notifiers; ``ack`` once they all have it and every
        earlier event of its partition is acknowledged."""
        entry = self.gate.add(m.topic, m.partition, m.offset, ack)
        if entry is None:
            return  # a copy of an event still being delivered
        done = functools.partial(self.gate.done, m.topic, m.partition, m.offset, entry)
        try:
            rec = orjson.loads(m.value or b"")
        except orjson.JSONDecodeError:
            log.error("alerts: unreadable alert event at offset %d", m.offset)
            done()
            return
        self.dispatcher.submit(rec, on_done=done, withdrawn=lambda: entry.withdrawn)

    def release_all(self) -> None:
        """Withdraw every event still being delivered (a rebalance is starting)."""
        n = self.gate.withdraw_all()
        self.withdrawn += n
        if n:
            log.info("alerts: %d undelivered alert events left unacknowledged at a "
                     "rebalance; whoever holds their partitions next delivers them", n)
