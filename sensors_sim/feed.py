"""Serialisation and ordering: site rows -> Kafka messages -> JSONL lines.

A line is ``{"topic", "key", "value"}`` with compact JSON, keys in a fixed order and floats
printed by orjson (shortest round-trip form), so equal inputs give equal bytes. An
undecodable message is written as ``{"topic", "key", "value_b64"}`` (base64 of the raw
bytes), which ``replay`` sends verbatim. Lines are ordered by (delivery time, topic,
site_id); a frame is placed at its first row's delivery time.

A site's heartbeats (:mod:`sensors_sim.heartbeat`) go in among its messages: each after
every message holding a reading stamped before it, so its claim ("everything stamped
before ``ts`` has been sent") is true. A reading from a skewed clock is the fault of a
broken clock and is not covered. Where that would put a heartbeat behind a reading stamped
after it (only a late-delivered reading can do that), the heartbeat is left out: it would
tell the processor nothing.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from .batch import TRAFFIC_TOPIC, Batch
from .faults import MessagePlan
from .heartbeat import heartbeat_value

__all__ = ["Beats", "SiteMessages", "merge", "render_line"]

F64 = NDArray[np.float64]
_BAD_TEXT = {"speed_kph": "fast", "lane": "left"}


def render_line(topic: str, key: str | None, value: Any) -> bytes:
    """Return one JSONL line (without newline) for a message whose value is a JSON object.

    >>> render_line("air.readings", "S", {"site_id": "S", "ts": 1.5, "no2_ugm3": 20.0})
    b'{"topic":"air.readings","key":"S","value":{"site_id":"S","ts":1.5,"no2_ugm3":20.0}}'
    """
    return orjson.dumps({"topic": topic, "key": key, "value": value})


def raw_line(topic: str, key: str | None, raw: bytes) -> bytes:
    """Return the JSONL line of a message whose value bytes are not JSON."""
    b64 = base64.b64encode(raw).decode("ascii")
    return orjson.dumps({"topic": topic, "key": key, "value_b64": b64})


@dataclass(frozen=True)
class Beats:
    """A site's heartbeats, in sending order."""

    ts: F64
    """Each heartbeat's ``ts`` (epoch s)."""
    due: F64
    """When each is sent (s): its ``ts``, or later when a reading stamped before it is
    delivered late."""
    after: NDArray[np.intp]
    """How many of the site's messages are sent before each."""

    def __len__(self) -> int:
        return int(self.ts.size)


def _no_beats() -> Beats:
    return Beats(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.intp))


@dataclass
class SiteMessages:
    """One site's messages, ready to render in delivery order."""

    batch: Batch
    plan: MessagePlan
    deliver: F64
    send_at_last: bool = False
    """Send a frame when its last row is due (live) rather than at its first (files)."""
    marks: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    """Row faults by kind, one flag per row (see sensors_sim.faults.SiteRows)."""
    dropped_ts: F64 = field(default_factory=lambda: np.zeros(0))
    beat_ts: F64 = field(default_factory=lambda: np.zeros(0))
    """Heartbeat instants wanted (epoch s, ascending); see :attr:`beats` for those sent."""

    def __post_init__(self) -> None:
        self._names = list(self.batch.columns)
        self._lists = [self.batch.columns[k].tolist() for k in self._names]
        self.beats = self._place_beats(self.beat_ts)

    def _place_beats(self, wanted: F64) -> Beats:
        """Place each wanted heartbeat after the site's messages holding readings stamped
        before it; drop those that would follow a reading stamped after them."""
        if wanted.size == 0:
            return _no_beats()
        keys, n_msg = self.keys, len(self.plan)
        if n_msg == 0:
            return Beats(wanted, wanted.copy(), np.zeros(wanted.size, dtype=np.intp))
        stamp = self.batch.ts
        trusted = ~self.marks["skew"] if "skew" in self.marks else np.ones(stamp.size, bool)
        msg_of_row = np.repeat(np.arange(n_msg), self.plan.ends - self.plan.starts)
        # p: 1 + the last message holding a trusted reading stamped before the heartbeat
        order = np.argsort(np.where(trusted, stamp, np.inf), kind="stable")
        sorted_ts = np.where(trusted, stamp, np.inf)[order]
        last_msg = np.maximum.accumulate(msg_of_row[order]) if order.size else msg_of_row
        before = np.searchsorted(sorted_ts, wanted, side="left")
        p = np.where(before > 0, last_msg[np.maximum(before - 1, 0)] + 1, 0)
        due = np.where(p > 0, np.maximum(wanted, keys[np.maximum(p - 1, 0)]), wanted)
        # messages sent before the heartbeat: those due earlier, and the first p
        q = np.maximum(p, np.searchsorted(keys, due, side="left"))
        newest = np.maximum.reduceat(np.where(trusted, stamp, -np.inf), self.plan.starts)
        newest = np.maximum.accumulate(newest)
        stale = (q > 0) & (newest[np.maximum(q - 1, 0)] > wanted)
        keep = ~stale
        return Beats(wanted[keep], due[keep], q[keep].astype(np.intp))

    def beat_rows(self, h: int | None = None) -> NDArray[np.intp]:
        """How many of the site's rows are sent before each of the first ``h`` heartbeats."""
        ends = np.concatenate((np.zeros(1, dtype=np.intp), self.plan.ends))
        return ends[self.beats.after[:h]].astype(np.intp)

    def render_beat(self, j: int) -> bytes:
        """Return the JSONL line of heartbeat ``j``: on the site's topic, keyed by site."""
        sid = self.batch.site_id
        return render_line(self.batch.topic, sid,
                           heartbeat_value(sid, float(self.beats.ts[j])))

    @property
    def keys(self) -> F64:
        """Delivery time of each message (its first row's, or its last's when live)."""
        if not len(self.plan):
            return np.zeros(0)
        return self.deliver[self.plan.ends - 1 if self.send_at_last else self.plan.starts]

    def head(self, k: int) -> SiteMessages:
        """Return the first ``k`` messages (and their rows, and the dropouts before them)."""
        rows = int(self.plan.ends[k - 1]) if k > 0 else 0
        cut = self.deliver[rows - 1] if rows else -np.inf
        return SiteMessages(self.batch.take(np.arange(rows)), self.plan.head(k),
                            self.deliver[:rows], self.send_at_last,
                            {name: v[:rows] for name, v in self.marks.items()},
                            self.dropped_ts[self.dropped_ts <= cut])

    def fault_counts(self) -> Counter[str]:
        """Count the faults in these messages: readings per row fault, messages otherwise."""
        counts = Counter({name: int(v.sum()) for name, v in self.marks.items()})
        counts.update(dropout=int(self.dropped_ts.size),
                      malformed=int(self.plan.decode.sum() + (self.plan.schema_row >= 0).sum()),
                      wrong_key=len(self.plan.keys))
        return +counts

    def value(self, m: int) -> dict[str, Any]:
        """Return the JSON value of message ``m`` as a dict (faults not applied)."""
        i, j = int(self.plan.starts[m]), int(self.plan.ends[m])
        sid = self.batch.site_id
        if self.plan.framed:
            return {"site_id": sid,
                    "columns": {k: v[i:j] for k, v in zip(self._names, self._lists, strict=True)}}
        out: dict[str, Any] = {"site_id": sid}
        for k, v in zip(self._names, self._lists, strict=True):
            out[k] = v[i]
        return out

    def render(self, m: int) -> bytes:
        """Return the JSONL line of message ``m``, its faults applied."""
        plan = self.plan
        topic, key = self.batch.topic, plan.keys.get(m, self.batch.site_id)
        value = self.value(m)
        variant = int(plan.variant[m])
        if plan.decode[m]:
            raw = orjson.dumps(value)
            # Odd variants: not UTF-8 (and not JSON either way); even: an unclosed object.
            raw = b"\xff\xfe" + raw if variant % 2 else raw[: 1 + variant * len(raw) // 8]
            return raw_line(topic, key, raw)
        if plan.schema_row[m] >= 0:
            self._break(value, int(plan.schema_row[m]), variant)
        return render_line(topic, key, value)

    def _break(self, value: dict[str, Any], row: int, variant: int) -> None:
        """Give one row a missing or mistyped field."""
        if self.batch.topic == TRAFFIC_TOPIC:
            name = ("speed_kph", "lane")[variant % 2]
            text = _BAD_TEXT[name]
        else:
            name = next(k for k in self._names if k.endswith(("_ugm3", "_mgm3")))
            text = "high"
        if self.plan.framed:
            value["columns"][name][row] = text
        elif variant >= 4:
            del value[name if self.batch.topic == TRAFFIC_TOPIC else "ts"]
        else:
            value[name] = text


def _sequence(site: SiteMessages) -> tuple[F64, NDArray[np.int64], NDArray[np.int64]]:
    """A site's messages and heartbeats in sending order: (time, position, item), where
    item m >= 0 is message m and -1 - j heartbeat j."""
    keys, beats = site.keys, site.beats
    n_msg = keys.size
    msg_pos = np.arange(n_msg) + np.searchsorted(beats.after, np.arange(n_msg), side="right")
    beat_pos = beats.after + np.arange(len(beats))
    times = np.concatenate((keys, beats.due))
    pos = np.concatenate((msg_pos, beat_pos)).astype(np.int64)
    item = np.concatenate((np.arange(n_msg), -1 - np.arange(len(beats)))).astype(np.int64)
    return times, pos, item


def merge(sites: Sequence[SiteMessages]) -> Iterator[tuple[float, int, int, bytes]]:
    """Yield (delivery time, site index, item, line) in (time, topic, site_id, sequence)
    order; item m >= 0 is the site's message m, -1 - j its heartbeat j."""
    if not sites:
        return
    order = sorted(range(len(sites)), key=lambda s: (sites[s].batch.topic, sites[s].batch.site_id))
    seqs = [_sequence(sites[s]) for s in order]
    site_ix = np.concatenate([np.full(t.size, r, dtype=np.int64)
                              for r, (t, _, _) in enumerate(seqs)])
    pos = np.concatenate([p for _, p, _ in seqs])
    items = np.concatenate([i for _, _, i in seqs])
    times = np.concatenate([t for t, _, _ in seqs])
    perm = np.lexsort((pos, site_ix, times))
    for t, r, m in zip(times[perm].tolist(), site_ix[perm].tolist(), items[perm].tolist(),
                       strict=True):
        site = sites[order[r]]
        yield t, order[r], m, site.render(m) if m >= 0 else site.render_beat(-1 - m)

