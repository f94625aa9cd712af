"""Serialisation and ordering: site rows -> Kafka messages -> JSONL lines.

A line is ``{"topic", "key", "value"}`` with compact JSON, keys in a fixed order and floats
printed by orjson (shortest round-trip form), so equal inputs give equal bytes. An
undecodable message is written as ``{"topic", "key", "value_b64"}`` (base64 of the raw
bytes), which ``replay`` sends verbatim. Lines are ordered by (delivery time, topic,
site_id); a frame is placed at its first row's delivery time.
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

__all__ = ["SiteMessages", "merge", "render_line"]

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

    def __post_init__(self) -> None:
        self._names = list(self.batch.columns)
        self._lists = [self.batch.columns[k].tolist() for k in self._names]

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


def merge(sites: Sequence[SiteMessages]) -> Iterator[tuple[float, int, bytes]]:
    """Yield (delivery time, site index, line) in (time, topic, site_id, sequence) order."""
    if not sites:
        return
    order = sorted(range(len(sites)), key=lambda s: (sites[s].batch.topic, sites[s].batch.site_id))
    keys = [sites[s].keys for s in order]
    site_ix = np.concatenate([np.full(k.size, r, dtype=np.int64) for r, k in enumerate(keys)])
    msg_ix = np.concatenate([np.arange(k.size) for k in keys])
    times = np.concatenate(keys)
    perm = np.lexsort((msg_ix, site_ix, times))
    for t, r, m in zip(times[perm].tolist(), site_ix[perm].tolist(), msg_ix[perm].tolist(),
                       strict=True):
        yield t, order[r], sites[order[r]].render(m)

