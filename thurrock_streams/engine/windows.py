"""Event-time tumbling windows per site, exactly as CONTRACT.md §3 defines them.

Plain timestamp arithmetic over numpy arrays: no Kafka, no Faust, no clock of its own
(the caller passes ``now``). One :class:`SiteWindows` holds one site's watermark, the
edge of its closed windows per window length, and the accepted readings of its still-open
windows. The same engine serves every kind of reading: the caller names the window
lengths and the columns to keep.

Rules (CONTRACT.md §3), with W the site's watermark and L the allowed lateness:

- window ``[start, end)`` with ``start`` a multiple of its length (epoch-aligned, UTC);
- W is the largest ``ts`` among the site's accepted readings and heartbeats;
- a window closes once ``W >= end + L``, or once a quiet site's *running* watermark (its
  W plus the quiet seconds the caller counts, :meth:`SiteWindows.run_on`) passes it;
- a reading more than the clock skew ahead of ``now`` is ``future``; a reading whose
  window of any length is already closed is ``late``; neither moves W;
- a heartbeat raises W to its ``ts`` and puts the windows ending at or before ``ts``
  inside the site's span; it holds no reading;
- closed windows are handed out once, from the first reading's window on, empty ones
  included, never past the site's span: the window of its last reading, or the last
  window ending at or before its last heartbeat. A window closed beyond the span waits
  until a later reading or heartbeat puts it inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Closed", "EngineConfig", "IngestResult", "SiteWindows"]

_NEG_INF = float("-inf")

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class EngineConfig:
    """Window lengths (seconds, ascending) and the event-time tolerances, in seconds."""

    sizes: tuple[int, ...]
    allowed_lateness_s: float = 30.0
    max_clock_skew_s: float = 300.0


@dataclass
class Closed:
    """Windows of one length closed by one step: ``starts`` and the readings inside them."""

    size: int
    starts: F64
    ts: F64
    cols: dict[str, NDArray[Any]]
    until: float | None = None
    """For an empty hand-out (no window): the end of the windows handed out so far."""

    @property
    def ends(self) -> F64:
        """Window ends, the aggregates' timestamps (UTC epoch seconds)."""
        return self.starts + self.size

    @property
    def edge(self) -> float:
        """The end of the last window handed out (this or an earlier step)."""
        return float(self.ends[-1]) if self.starts.size else float(self.until or _NEG_INF)

    def index(self) -> NDArray[np.int64]:
        """Window position (0-based within ``starts``) of every reading."""
        if self.starts.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.floor((self.ts - self.starts[0]) / self.size).astype(np.int64)


@dataclass
class IngestResult:
    """What one batch did to a site: per-row verdicts and the windows it closed."""

    future: NDArray[np.bool_]
    late: NDArray[np.bool_]
    closed: list[Closed]

    @property
    def accepted(self) -> NDArray[np.bool_]:
        """Rows that now count in windows."""
        return ~(self.future | self.late)


def _floor_to(t: F64 | float, size: int) -> Any:
    return np.floor(np.asarray(t, dtype=np.float64) / size) * size


def _floor_scalar(t: float, size: int) -> float:
    """:func:`_floor_to` of one number, bit for bit, without numpy's per-call cost."""
    if t - t != 0.0:  # infinite or NaN: as numpy
        return t
    return float(math.floor(t / size)) * size


@dataclass(slots=True)
class SiteWindows:
    """One site's window state; serialisable with :meth:`to_state` / :meth:`from_state`."""

    watermark: float = -np.inf
    closed_until: dict[int, float] = field(default_factory=dict)
    next_emit: dict[int, float] = field(default_factory=dict)
    buf_ts: F64 = field(default_factory=lambda: np.zeros(0))
    buf_cols: dict[str, NDArray[Any]] = field(default_factory=dict)
    span_end: dict[int, float] = field(default_factory=dict)
    """Per window length, the end of the last window inside the site's span."""
    run_to: float = _NEG_INF
    """How far a quiet site's running watermark has run (-inf once the site is heard
    from again): a worker taking the site over carries on from there."""

    def heartbeat(self, cfg: EngineConfig, ts: float, now: float) -> tuple[bool, list[Closed]]:
        """Apply a heartbeat: (True if it is ``future``, the windows it closed).

        One at or behind the watermark changes nothing.

        >>> w = SiteWindows()
        >>> cfg = EngineConfig(sizes=(60,), allowed_lateness_s=30)
        >>> _ = w.ingest(cfg, np.array([10.0]), {}, now=100.0)
        >>> future, closed = w.heartbeat(cfg, 150.0, now=150.0)
        >>> future, [(c.starts.tolist(), c.ts.tolist()) for c in closed]
        (False, [([0.0, 60.0], [10.0])])
        """
        if ts > now + cfg.max_clock_skew_s:
            return True, []
        if not ts > self.watermark:
            return False, []
        self.watermark = ts
        self.run_to = _NEG_INF
        for s in cfg.sizes:
            self.span_end[s] = max(self.span_end.get(s, _NEG_INF), _floor_scalar(ts, s))
        lat = cfg.allowed_lateness_s
        closed = self._close(cfg, {s: _floor_scalar(ts - lat, s) for s in cfg.sizes})
        # Nothing new closed, but the span grew: a pipeline with spans of its own (air, per
        # pollutant) may now have held-back windows to write, up to what was handed out.
        done = {c.size for c in closed}
        closed += [Closed(s, np.zeros(0), np.zeros(0),
                          {k: v[:0] for k, v in self.buf_cols.items()}, self.next_emit[s])
                   for s in cfg.sizes if s not in done and s in self.next_emit]
        return False, closed

    def run_on(self, cfg: EngineConfig, watermark: float) -> list[Closed]:
        """Close the windows a quiet site's running ``watermark`` has passed.

        W itself stays the largest ``ts`` the site sent: the closed edges remember the
        closures (a reading for a closed window is late), and no window past the span is
        handed out.
        """
        lat = cfg.allowed_lateness_s
        edges = {s: _floor_scalar(watermark - lat, s) for s in cfg.sizes}
        if all(edges[s] <= self.closed_until.get(s, _NEG_INF) for s in cfg.sizes):
            return []
        self.run_to = max(self.run_to, watermark)
        return self._close(cfg, edges)

    def closes_at(self, cfg: EngineConfig, watermark: float) -> bool:
        """True if a running ``watermark`` would close a window that is still open."""
        lat = cfg.allowed_lateness_s
        return any(_floor_scalar(watermark - lat, s) > self.closed_until.get(s, _NEG_INF)
                   for s in cfg.sizes)

    def ingest(self, cfg: EngineConfig, ts: F64, cols: dict[str, NDArray[Any]],
               now: float) -> IngestResult:
        """Apply a batch of one site's readings in arrival order; return verdicts and closures.

        >>> w = SiteWindows()
        >>> cfg = EngineConfig(sizes=(60,), allowed_lateness_s=30)
        >>> r = w.ingest(cfg, np.array([10.0, 95.0, 20.0]), {}, now=100.0)
        >>> # 95 takes the watermark past 60 + 30 s: [0, 60) closes with 10 alone, 20 is late.
        >>> r.late.tolist(), r.closed[0].starts.tolist(), r.closed[0].ts.tolist()
        ([False, False, True], [0.0], [10.0])
        """
        lat = cfg.allowed_lateness_s
        if ts.size == 1:  # one reading (a site sending single readings): no array work
            return self._ingest_one(cfg, ts, cols, now)
        future = ts > now + cfg.max_clock_skew_s
        late = np.zeros(ts.shape, dtype=np.bool_)
        valid = ~future
        if valid.any():
            tv = ts[valid]
            prefix = np.maximum.accumulate(tv)
            w_before = np.maximum(np.concatenate(([self.watermark], prefix[:-1])),
                                  self.watermark)
            late_v = np.zeros(tv.shape, dtype=np.bool_)
            for s in cfg.sizes:
                edge = np.maximum(_floor_to(w_before - lat, s),
                                  self.closed_until.get(s, -np.inf))
                late_v |= _floor_to(tv, s) + s <= edge
            late[valid] = late_v
        accepted = valid & ~late
        if accepted.any():
            self._accept(cfg, ts[accepted], {k: v[accepted] for k, v in cols.items()})
        edges = {s: _floor_scalar(self.watermark - lat, s) for s in cfg.sizes}
        return IngestResult(future, late, self._close(cfg, edges))

    def _ingest_one(self, cfg: EngineConfig, ts: F64, cols: dict[str, NDArray[Any]],
                    now: float) -> IngestResult:
        """:meth:`ingest` of one reading, with Python floats instead of numpy calls."""
        lat = cfg.allowed_lateness_s
        t = float(ts[0])
        future = t > now + cfg.max_clock_skew_s
        late = False
        if not future:
            for s in cfg.sizes:
                edge = max(_floor_scalar(self.watermark - lat, s),
                           self.closed_until.get(s, -np.inf))
                if _floor_scalar(t, s) + s <= edge:
                    late = True
                    break
        if not (future or late):
            self._accept(cfg, ts, cols)
        edges = {s: _floor_scalar(self.watermark - lat, s) for s in cfg.sizes}
        return IngestResult(np.array([future]), np.array([late]), self._close(cfg, edges))

    def copy(self) -> SiteWindows:
        """An independent copy (arrays are shared: they are replaced, never changed)."""
        return SiteWindows(self.watermark, dict(self.closed_until), dict(self.next_emit),
                           self.buf_ts, dict(self.buf_cols), dict(self.span_end), self.run_to)

    def _accept(self, cfg: EngineConfig, ts: F64, cols: dict[str, NDArray[Any]]) -> None:
        hi = float(ts.max())
        self.watermark = max(self.watermark, hi)
        self.run_to = _NEG_INF
        lo = float(ts.min())
        for s in cfg.sizes:
            first = _floor_scalar(lo, s)
            self.next_emit[s] = min(self.next_emit.get(s, first), first)
            self.span_end[s] = max(self.span_end.get(s, _NEG_INF), _floor_scalar(hi, s) + s)
        self.buf_ts = np.concatenate((self.buf_ts, ts))
        for k in [k for k in self.buf_cols if k not in cols]:
            del self.buf_cols[k]  # a column no longer kept (a state stored by an earlier release)
        for k, v in cols.items():
            old = self.buf_cols.get(k)
            self.buf_cols[k] = v.copy() if old is None else np.concatenate((old, v))

    def _close(self, cfg: EngineConfig, edges: dict[int, Any]) -> list[Closed]:
        out = []
        for s in cfg.sizes:
            edge = max(float(edges[s]), self.closed_until.get(s, -np.inf))
            self.closed_until[s] = edge
            first = self.next_emit.get(s)
            stop = min(edge, self.span_end.get(s, _NEG_INF))
            if first is None or first >= stop:
                continue
            starts = np.arange(first, stop, s, dtype=np.float64)
            inside = (self.buf_ts >= first) & (self.buf_ts < stop)
            out.append(Closed(s, starts, self.buf_ts[inside],
                              {k: v[inside] for k, v in self.buf_cols.items()}))
            self.next_emit[s] = stop
        keep_from = min(self.closed_until.values(), default=-np.inf)
        keep = self.buf_ts >= keep_from
        if not keep.all():
            self.buf_ts = self.buf_ts[keep]
            self.buf_cols = {k: v[keep] for k, v in self.buf_cols.items()}
        return out

    def to_state(self) -> dict[str, Any]:
        """A plain dict of scalars and arrays (see :mod:`thurrock_streams.engine.codec`)."""
        return {
            "watermark": self.watermark,
            "closed_until": {str(k): v for k, v in self.closed_until.items()},
            "next_emit": {str(k): v for k, v in self.next_emit.items()},
            "buf_ts": self.buf_ts,
            "buf_cols": dict(self.buf_cols),
            "span_end": {str(k): v for k, v in self.span_end.items()},
            "run_to": self.run_to,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> SiteWindows:
        """Rebuild from :meth:`to_state` output.

        A state stored before spans existed gets the span its readings imply: up to the
        window of its watermark (then always a reading's ``ts``).
        """
        w = cls(
            watermark=float(d["watermark"]),
            closed_until={int(k): float(v) for k, v in d["closed_until"].items()},
            next_emit={int(k): float(v) for k, v in d["next_emit"].items()},
            buf_ts=np.asarray(d["buf_ts"], dtype=np.float64),
            buf_cols={k: np.asarray(v) for k, v in d["buf_cols"].items()},
        )
        if "span_end" in d:
            w.span_end = {int(k): float(v) for k, v in d["span_end"].items()}
            w.run_to = float(d.get("run_to", _NEG_INF))
        elif math.isfinite(w.watermark):
            w.span_end = {s: _floor_scalar(w.watermark, s) + s for s in w.next_emit}
        return w
