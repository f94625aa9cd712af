"""Sensor faults on demand, each with its own rate; the default is none at all.

Row faults act on one site's readings (numpy columns) and are applied in this order:
dropout gaps, stuck spells, duplicates, then at most one of spike, clock skew or late
delivery per reading. Message faults (malformed bytes or fields, wrong keys) act on the
messages after framing. Every fault is counted; :mod:`sensors_sim.expect` turns the
result into the dead-letter counts the processor will report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .batch import TRAFFIC_TOPIC, Batch
from .errors import UsageError

__all__ = ["FAULT_KINDS", "FaultRates", "MessagePlan", "SiteRows", "apply_row_faults",
           "plan_messages"]

F64 = NDArray[np.float64]
FAULT_KINDS = ("dropout", "stuck", "spike", "skew", "duplicate", "out_of_order", "malformed",
               "wrong_key")
SkewDirection = Literal["behind", "ahead"]
DROPOUT_S = (60.0, 1200.0)  # gap length range
STUCK_S = (300.0, 3600.0)  # stuck spell length range
SKEW_BEHIND_S = (3600.0, 6 * 3600.0)
SKEW_AHEAD_S = (600.0, 7200.0)
TRAFFIC_DELAY_S = (2.0, 28.0)  # out-of-order delay, inside the 30 s allowed lateness
_TRAFFIC_STUCK = ("speed_kph", "length_m", "class")


@dataclass(frozen=True)
class FaultRates:
    """How often each fault happens, 0..1.

    ``dropout`` and ``stuck`` are shares of each site's time: gaps of 1–20 min, or spells of
    5–60 min in which the values repeat, cover about that share of the time (and so of the
    readings). ``spike``, ``skew``, ``duplicate`` and ``out_of_order`` are probabilities per
    reading; ``malformed`` and ``wrong_key`` per message.
    """

    dropout: float = 0.0
    stuck: float = 0.0
    spike: float = 0.0
    skew: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    malformed: float = 0.0
    wrong_key: float = 0.0
    skew_direction: SkewDirection = "behind"

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, kind)
            if not 0.0 <= rate <= 1.0:
                raise UsageError(f"fault rate {kind}={rate} must be between 0 and 1")
        if self.spike + self.skew + self.out_of_order > 1.0:
            raise UsageError("spike + skew + out-of-order rates must not exceed 1")

    def any(self) -> bool:
        """Return True when at least one fault has a non-zero rate."""
        return any(getattr(self, k) > 0 for k in FAULT_KINDS)

    def as_dict(self) -> dict[str, float | str]:
        """Return the rates as a plain dict (for the summary file)."""
        return asdict(self)


@dataclass
class SiteRows:
    """One site's readings after row faults, in delivery order."""

    batch: Batch
    deliver: F64
    """Delivery key of each row (s): its true time, plus the delay of a late delivery."""
    true_ts: F64
    """Each row's true event time (before any clock skew)."""
    marks: dict[str, NDArray[np.bool_]]
    """Fault kind -> which rows carry it (stuck, duplicate copy, spike, skew, out_of_order)."""
    dropped_ts: F64
    """Event times of the readings lost in dropouts."""
    gaps: F64 = field(default_factory=lambda: np.zeros((0, 2)))
    """The dropout gaps, one ``[start, end)`` row each (s): the sensor is off the air, so
    it sends no heartbeat inside one either."""


def _spells(ts: F64, span: tuple[float, float], share: float, length_s: tuple[float, float],
            rng: np.random.Generator) -> tuple[NDArray[np.intp], NDArray[np.bool_], F64]:
    """Draw spells covering about ``share`` of the time span; for each row, the first row of
    the latest spell started at or before it, and whether the row is inside that spell;
    and the spells themselves, one ``[start, end)`` row each."""
    mean = 0.5 * (length_s[0] + length_s[1])
    n = int(rng.poisson(share * (span[1] - span[0]) / mean))
    starts = np.sort(rng.uniform(span[0] - mean, span[1], n))  # spells already running count
    ends = starts + rng.uniform(*length_s, n)
    pos = np.searchsorted(starts, ts, side="right") - 1
    inside = pos >= 0
    inside[inside] = ts[inside] < ends[pos[inside]]
    first = np.searchsorted(ts, starts[np.maximum(pos, 0)], side="left") if n else pos
    return np.asarray(first, dtype=np.intp), inside, np.column_stack((starts, ends))


def _dropout(b: Batch, share: float, span: tuple[float, float], rng: np.random.Generator
             ) -> tuple[Batch, F64, F64]:
    """Remove the rows inside gaps; return the rest, the times of the removed rows and the
    gaps (drawn for a site with no readings too: a quiet road's sensor can be off the air)."""
    if share <= 0:
        return b, np.zeros(0), np.zeros((0, 2))
    _, gone, gaps = _spells(b.ts, span, share, DROPOUT_S, rng)
    return b.take(~gone), b.ts[gone], gaps


def _stuck(b: Batch, share: float, span: tuple[float, float], rng: np.random.Generator
           ) -> NDArray[np.bool_]:
    """Repeat the values of a spell's first row over the spell; return the rows changed."""
    hit = np.zeros(len(b), dtype=bool)
    if share <= 0 or len(b) == 0:
        return hit
    src, inside, _ = _spells(b.ts, span, share, STUCK_S, rng)
    hit = inside & (src < np.arange(len(b)))
    names = _TRAFFIC_STUCK if b.topic == TRAFFIC_TOPIC else [
        k for k in b.columns if k.endswith(("_ugm3", "_mgm3"))]
    for name in names:
        b.columns[name][hit] = b.columns[name][src[hit]]
    return hit


def _spike(b: Batch, rows: NDArray[np.intp], rng: np.random.Generator) -> None:
    """Put an out-of-range value into each given row (one field per row)."""
    if b.topic == TRAFFIC_TOPIC:
        b.columns["speed_kph"][rows] = np.round(rng.uniform(300.0, 999.0, rows.size), 1)
        return
    names = [k for k in b.columns if k.endswith(("_ugm3", "_mgm3"))]
    which = rng.integers(0, len(names), rows.size)
    for i, name in enumerate(names):
        sel = rows[which == i]
        lo = 201.0 if name == "co_mgm3" else 5001.0
        b.columns[name][sel] = np.round(rng.uniform(lo, lo * 4.9, sel.size), 1)


def apply_row_faults(batch: Batch, rates: FaultRates, rng: np.random.Generator,
                     span: tuple[float, float], skew_anchor: float | None,
                     air_interval_s: float = 60.0) -> SiteRows:
    """Apply the row faults to one site's readings (time-ordered) and order them for delivery.

    ``span`` is the simulated time range, over which gaps and stuck spells are spread.
    ``skew_anchor``: a clock skewed ahead stamps ``max(ts, anchor) + 10 min..2 h`` — the end
    of the data for a file (future once replayed with ``--rebase-now``), None when live.
    """
    b, dropped, gaps = _dropout(batch, rates.dropout, span, rng)
    b = b.take(np.arange(len(b)))  # own copy: faults below write into the columns
    stuck = _stuck(b, rates.stuck, span, rng)
    dup = np.zeros(len(b), dtype=bool)
    if rates.duplicate > 0 and len(b):
        dup = rng.random(len(b)) < rates.duplicate
        rows = np.repeat(np.arange(len(b)), 1 + dup)
        b, stuck = b.take(rows), stuck[rows]
        dup = np.zeros(len(b), dtype=bool)
        dup[1:] = rows[1:] == rows[:-1]  # the second of each pair is the copy
    true_ts = b.ts.copy()
    deliver = true_ts.copy()
    u = rng.random(len(b))
    edges = np.cumsum([rates.spike, rates.skew, rates.out_of_order])
    kind = np.searchsorted(edges, u, side="right")  # 0 spike, 1 skew, 2 late delivery, 3 none
    spiked, skewed, delayed = (np.flatnonzero(kind == k) for k in range(3))
    _spike(b, spiked, rng)
    ts = b.columns["ts"].astype(np.float64, copy=False)
    b.columns["ts"] = ts
    if rates.skew_direction == "behind":
        ts[skewed] = ts[skewed] - rng.uniform(*SKEW_BEHIND_S, skewed.size)
    else:
        base = ts[skewed] if skew_anchor is None else np.maximum(ts[skewed], skew_anchor)
        ts[skewed] = base + rng.uniform(*SKEW_AHEAD_S, skewed.size)
    ts[skewed] = np.round(ts[skewed], 3)
    lo, hi = (TRAFFIC_DELAY_S if b.topic == TRAFFIC_TOPIC
              else (air_interval_s + 1.0, air_interval_s + 20.0))
    deliver[delayed] += rng.uniform(lo, hi, delayed.size)
    order = np.argsort(deliver, kind="stable")
    marks = {"stuck": stuck, "duplicate": dup, "spike": kind == 0, "skew": kind == 1,
             "out_of_order": kind == 2}
    return SiteRows(b.take(order), deliver[order], true_ts[order],
                    {k: v[order] for k, v in marks.items()}, dropped, gaps)


@dataclass
class MessagePlan:
    """How one site's delivery-ordered rows become messages, and which messages are bad."""

    starts: NDArray[np.intp]
    ends: NDArray[np.intp]
    framed: bool
    decode: NDArray[np.bool_]
    """The message's bytes are replaced by undecodable ones."""
    schema_row: NDArray[np.intp]
    """Row (within the message) given a missing or mistyped field; -1 for none."""
    keys: dict[int, str | None]
    """Message index -> wrong key (None: no key at all)."""
    variant: NDArray[np.intp]
    """Which corruption of its kind each malformed message gets (see sensors_sim.feed)."""

    def __len__(self) -> int:
        return int(self.starts.size)

    def head(self, k: int) -> MessagePlan:
        """Return the plan of the first ``k`` messages."""
        return MessagePlan(self.starts[:k], self.ends[:k], self.framed, self.decode[:k],
                           self.schema_row[:k], {m: v for m, v in self.keys.items() if m < k},
                           self.variant[:k])


def _cuts(n_rows: int, size: int, buckets: NDArray[np.int64] | None) -> NDArray[np.intp]:
    """Message start rows: every ``size`` rows, restarting at each change of bucket."""
    if buckets is None:
        return np.arange(0, n_rows, size, dtype=np.intp)
    new = np.ones(n_rows, dtype=bool)
    new[1:] = buckets[1:] != buckets[:-1]
    first = np.maximum.accumulate(np.where(new, np.arange(n_rows), 0))
    return np.flatnonzero((np.arange(n_rows) - first) % size == 0).astype(np.intp)


def plan_messages(n_rows: int, frames: int, rates: FaultRates, rng: np.random.Generator,
                  other_keys: list[str], buckets: NDArray[np.int64] | None = None
                  ) -> MessagePlan:
    """Cut rows into messages and pick the bad ones.

    ``frames`` rows per message (0 = single readings, not framed); with ``buckets`` (one
    integer per row, e.g. a 10-second slot) a frame never spans two buckets.
    """
    size = max(frames, 1)
    starts = _cuts(n_rows, size, buckets if frames > 1 else None)
    ends = np.append(starts[1:], n_rows).astype(np.intp)[: starts.size]
    m = starts.size
    bad = rng.random(m) < rates.malformed
    decode = bad & (rng.random(m) < 0.5)
    schema_row = np.where(bad & ~decode, (rng.random(m) * (ends - starts)).astype(np.intp), -1)
    wrong = np.flatnonzero(rng.random(m) < rates.wrong_key)
    picks = rng.integers(0, len(other_keys) + 1, wrong.size) if other_keys else np.zeros(
        wrong.size, dtype=np.intp)
    keys: dict[int, str | None] = {int(i): (other_keys[int(k) - 1] if k > 0 else None)
                                   for i, k in zip(wrong, picks, strict=True)}
    return MessagePlan(starts, ends, frames > 0, decode, schema_row.astype(np.intp), keys,
                       rng.integers(0, 6, m).astype(np.intp))
