"""What the processor will do with a site's messages: the expected dead-letter counts.

The rules are CONTRACT.md §2–3: undecodable bytes (``decode``), a missing or mistyped field
(``schema``), a value out of range (``range``), a time stamped more than the allowed clock
skew ahead of the processor's clock (``future``), and a reading whose smallest window is
already closed by the site's watermark (``late``). The watermark is the largest time among
the site's accepted readings and heartbeats; a window [start, end) closes once it reaches
end + lateness. Heartbeats are counted apart: they are not readings. The simulator never
stamps one ahead of the clock that sends it, so none is expected to be ``future``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .batch import TRAFFIC_TOPIC, Batch
from .faults import MessagePlan

__all__ = ["REASONS", "Expectation", "expect_site", "out_of_range"]

F64 = NDArray[np.float64]
REASONS = ("decode", "schema", "range", "future", "late")
#: Smallest window of each topic: a reading is late once this window is closed.
SMALLEST_WINDOW_S = {"traffic.readings": 60.0, "air.readings": 900.0}
_CLASSES = ("car", "lgv", "hgv", "bus", "motorcycle", "other")
_AIR_RANGE = {"co_mgm3": (0.0, 200.0), "temperature_c": (-50.0, 60.0),
              "humidity_pct": (0.0, 100.0)}


def _outside(values: NDArray[np.generic], lo: float, hi: float, open_lo: bool = False
             ) -> NDArray[np.bool_]:
    v = values.astype(np.float64)
    low_ok = v > lo if open_lo else v >= lo
    return ~(low_ok & (v <= hi))  # NaN fails both tests, so it is out of range


def out_of_range(batch: Batch) -> NDArray[np.bool_]:
    """Return, per row, whether any field breaks its CONTRACT.md §2 range.

    >>> from sensors_sim.batch import Batch
    >>> b = Batch("traffic.readings", "S", {"ts": np.zeros(2), "lane": np.array([1, 9]),
    ...           "speed_kph": np.array([50.0, 50.0])})
    >>> out_of_range(b).tolist()
    [False, True]
    """
    cols = batch.columns
    bad = np.zeros(len(batch), dtype=bool)
    if batch.topic == TRAFFIC_TOPIC:
        bad |= _outside(cols["lane"], 1, 8)
        bad |= _outside(cols["speed_kph"], 0.0, 250.0)
        if "length_m" in cols:
            bad |= _outside(cols["length_m"], 0.0, 30.0, open_lo=True)
        if "class" in cols:
            bad |= ~np.isin(cols["class"], _CLASSES)
        return bad
    for name, values in cols.items():
        if name.endswith("_ugm3"):
            bad |= _outside(values, 0.0, 5000.0)
        elif name in _AIR_RANGE:
            bad |= _outside(values, *_AIR_RANGE[name])
    return bad


@dataclass
class Expectation:
    """Expected outcome counts and the watermark each site ends with."""

    readings: int = 0
    """Records the processor accounts for: every row of a decodable message, and one per
    undecodable message."""
    heartbeats: int = 0
    """Heartbeats, apart from the readings."""
    deadletter: Counter[str] | None = None
    watermark: float = -np.inf

    @property
    def accepted(self) -> int:
        """Readings expected in aggregates."""
        return self.readings - sum((self.deadletter or Counter()).values())


def expect_site(batch: Batch, plan: MessagePlan, clock: F64 | float, *, lateness_s: float,
                max_skew_s: float, watermark: float = -np.inf,
                beats: tuple[F64, NDArray[np.intp]] | None = None) -> Expectation:
    """Predict the processor's verdict on one site's delivery-ordered rows and messages.

    ``clock`` is the processor's clock when each row arrives (a scalar, or one per row).
    ``beats`` is the site's heartbeats in sending order: their ``ts``, and how many of the
    rows are sent before each.
    """
    n = len(batch)
    gone = np.zeros(n, dtype=bool)
    schema = np.zeros(n, dtype=bool)
    for m in np.flatnonzero(plan.decode).tolist():
        gone[plan.starts[m]:plan.ends[m]] = True
    has_row = (plan.schema_row >= 0) & ~plan.decode
    schema[plan.starts[has_row] + plan.schema_row[has_row]] = True
    rng_bad = out_of_range(batch) & ~gone & ~schema
    ts = batch.ts
    ok = ~(gone | schema | rng_bad)
    future = ok & (ts > np.asarray(clock) + max_skew_s)
    moving = ok & ~future
    marks = np.concatenate(([watermark], np.where(moving, ts, -np.inf)))
    wm_before = np.maximum.accumulate(marks)[:-1]
    beat_ts, beat_rows = beats if beats is not None else (np.zeros(0), np.zeros(0, np.intp))
    if beat_ts.size:
        # heartbeat j comes before row i when beat_rows[j] <= i
        k = np.searchsorted(beat_rows, np.arange(n), side="right")
        passed = np.maximum.accumulate(beat_ts)
        wm_before = np.maximum(wm_before, np.where(k > 0, passed[np.maximum(k - 1, 0)], -np.inf))
    w = SMALLEST_WINDOW_S[batch.topic]
    late = moving & (wm_before >= np.floor(ts / w) * w + w + lateness_s)
    counts = Counter(decode=int(plan.decode.sum()), schema=int(schema.sum()),
                     range=int(rng_bad.sum()), future=int(future.sum()), late=int(late.sum()))
    final = max(float(np.max(marks)), float(np.max(beat_ts, initial=-np.inf)))
    return Expectation(readings=int(n - gone.sum() + plan.decode.sum()),
                       heartbeats=int(beat_ts.size), deadletter=+counts, watermark=final)
