"""The air pipeline: pollution means, data capture and the DAQI per monitor (CONTRACT.md §5).

The window engine closes 15-minute and 1-hour windows per site; this module turns them
into per-pollutant records. Rules beyond the engine's:

- A pollutant's windows are written only between the site's first and last sample *of
  that pollutant*, or a later heartbeat of the monitor (CONTRACT.md §3). A window closed
  after that is held back; it is written (empty: no mean, capture 0, invalid) once a
  later sample of that pollutant or heartbeat shows it lies inside the pollutant's span
  (when the monitor's next window closes), and never otherwise.
- Running 8-hour (O3, CO) and 24-hour (PM2.5, PM10) means are written at the end of every
  hour whose 1-hour mean is written, from the last 8 or 24 hourly means; hours before the
  pollutant's first sample count as missing.
- The ``daqi`` record of an hour end H is written when the site's 1-hour window ending at
  H closes, from the indices known then: NO2 1h, O3 8h, PM2.5 24h, PM10 24h ending at H,
  and the highest of the four SO2 15-minute indices of that hour. If a held-back window
  later adds an index for H that changes the result, the record for H is written again
  with the new value (newest wins, as InfluxDB keeps it) — for hours up to 26 h before
  the site's latest closed hour; older hours keep their record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .engine.windows import Closed, EngineConfig
from .kernels.air import running_means, window_means
from .kernels.daqi import DAQI_PERIOD, band_name, daqi_index
from .qc import window_runs
from .readings import POLLUTANT_FIELDS, Kind

__all__ = ["PERIOD_TAGS", "RUNNING_HOURS", "AirPipeline"]

#: Window lengths in seconds and their ``period`` tag.
PERIOD_TAGS: dict[int, str] = {900: "15m", 3600: "1h"}
#: Running means: hours averaged per pollutant (CONTRACT.md §5).
RUNNING_HOURS: dict[str, int] = {"o3": 8, "co": 8, "pm25": 24, "pm10": 24}
_FIELD_OF = {p: f for f, p in POLLUTANT_FIELDS.items()}
_KEEP_HOURS = 26  # hours of DAQI parts kept for late corrections
#: Decimal places of reported means (µg/m³ or mg/m³).
MEAN_DECIMALS = 9


def _f(x: float) -> float | None:
    return None if x != x else float(x)


@dataclass
class AirPipeline:
    """Air samples in, ``air_quality`` and ``daqi`` records out."""

    config: EngineConfig
    kind: Kind = "air"
    pollutants: tuple[str, ...] = field(default=tuple(POLLUTANT_FIELDS.values()))
    #: Flat-line check (:mod:`.qc`): runs of this many identical values are reported.
    stuck_samples: int | None = None
    stuck_fields: tuple[str, ...] = ()

    @classmethod
    def create(cls, allowed_lateness_s: float, max_clock_skew_s: float,
               stuck_samples: int | None = None,
               stuck_fields: tuple[str, ...] = ()) -> AirPipeline:
        """A pipeline with the contract's window lengths."""
        return cls(EngineConfig(tuple(PERIOD_TAGS), allowed_lateness_s, max_clock_skew_s),
                   stuck_samples=stuck_samples,
                   stuck_fields=tuple(f for f in stuck_fields if f in POLLUTANT_FIELDS))

    def on_accept(self, carry: dict[str, Any], ts: NDArray[np.float64],
                  cols: dict[str, NDArray[Any]]) -> None:
        """Track each pollutant's first window and latest sample."""
        nxt = carry.setdefault("next", {})
        last = carry.setdefault("last", {})
        for p in self.pollutants:
            has = ~np.isnan(cols[_FIELD_OF[p]])
            if not has.any():
                continue
            t = ts[has]
            last[p] = max(last.get(p, -np.inf), float(t.max()))
            starts = nxt.setdefault(p, {})
            for size in PERIOD_TAGS:
                first = float(np.floor(t.min() / size) * size)
                starts[str(size)] = min(starts.get(str(size), first), first)

    #: See :class:`~thurrock_streams.engine.processor.Pipeline`.
    spans_of_its_own: ClassVar[bool] = True
    #: The columns a monitor's open windows keep: the pollutants (temperature and
    #: humidity are checked at decode, then not needed).
    buffered: ClassVar[tuple[str, ...]] = tuple(POLLUTANT_FIELDS)

    def on_heartbeat(self, carry: dict[str, Any], ts: float) -> None:
        """Note the monitor's latest heartbeat: it extends every pollutant's span."""
        carry["heartbeat"] = max(carry.get("heartbeat", -np.inf), ts)

    def aggregates(self, site: str, closed: list[Closed],
                   carry: dict[str, Any]) -> list[dict[str, Any]]:
        """Records for the windows a step closed, then the DAQI of closed hour ends."""
        out: list[dict[str, Any]] = []
        for c in sorted(closed, key=lambda c: c.size):
            for p in self.pollutants:
                recs = self._pollutant(site, p, c, carry)
                self._mark_stuck(p, c, recs, carry)
                out += recs
            if c.size == 3600:
                carry["hour_edge"] = max(carry.get("hour_edge", -np.inf), c.edge)
        out += self._daqi(site, carry)
        return out

    def _mark_stuck(self, p: str, c: Closed, recs: list[dict[str, Any]],
                    carry: dict[str, Any]) -> None:
        """Mark 15-minute records whose window holds a flat-line run (:mod:`.qc`)."""
        f = _FIELD_OF[p]
        if self.stuck_samples is None or c.size != 900 or f not in self.stuck_fields:
            return
        peaks = window_runs(carry, f, c.ts, c.cols[f], c.starts, c.size)
        by_end = dict(zip(c.ends.tolist(), peaks.tolist(), strict=True))
        for rec in recs:
            run = by_end.get(rec["ts"], 0)
            if run >= self.stuck_samples and rec["period"] == "15m":
                # QC marks for the alert agent: not a field, so the sink leaves it out
                rec["qc"] = {"stuck": {f: run}}

    def _pollutant(self, site: str, p: str, c: Closed,
                   carry: dict[str, Any]) -> list[dict[str, Any]]:
        starts = carry.get("next", {}).get(p)
        if starts is None or str(c.size) not in starts:
            return []
        s = c.size
        first, edge = starts[str(s)], c.edge
        span = float(np.floor(carry["last"][p] / s) * s) + s  # the last sample's window
        span = max(span, float(np.floor(carry.get("heartbeat", -np.inf) / s) * s))
        stop = min(edge, span)
        if stop <= first:
            return []
        window_starts = np.arange(first, stop, s, dtype=np.float64)
        mean, pct, valid, _ = window_means(c.ts, c.cols[_FIELD_OF[p]], first, s,
                                           window_starts.size)
        starts[str(s)] = stop
        recs = self._records(site, p, PERIOD_TAGS[s], window_starts + s, mean, pct, valid, carry)
        if s == 3600 and p in RUNNING_HOURS:
            recs += self._running(site, p, window_starts + s, mean, valid, carry)
        return recs

    def _running(self, site: str, p: str, ends: NDArray[np.float64], mean: NDArray[np.float64],
                 valid: NDArray[np.bool_], carry: dict[str, Any]) -> list[dict[str, Any]]:
        hours = RUNNING_HOURS[p]
        hist = carry.setdefault("hist", {}).setdefault(p, {"mean": [], "valid": []})
        all_mean = np.concatenate((np.asarray(hist["mean"], dtype=np.float64), mean))
        all_valid = np.concatenate((np.asarray(hist["valid"], dtype=np.bool_), valid))
        rm, rpct, rvalid, _ = running_means(all_mean, all_valid, hours)
        n = ends.size
        hist["mean"] = all_mean[-(hours - 1):].tolist() if hours > 1 else []
        hist["valid"] = all_valid[-(hours - 1):].tolist() if hours > 1 else []
        return self._records(site, p, f"{hours}h", ends, rm[-n:], rpct[-n:], rvalid[-n:], carry)

    def _records(self, site: str, p: str, period: str, ends: NDArray[np.float64],
                 mean: NDArray[np.float64], pct: NDArray[np.float64],
                 valid: NDArray[np.bool_], carry: dict[str, Any]) -> list[dict[str, Any]]:
        # Means to 1e-9 µg/m³: drops float summation noise (60 × 200.49 / 60 is
        # 200.48999999999984), so the DAQI's half-up rounding sees the decimal mean.
        mean = np.round(mean, MEAN_DECIMALS)
        index = None
        if DAQI_PERIOD.get(p) == period:
            index = daqi_index(p, mean, valid).tolist()
            self._note_indices(p, period, ends, index, carry)
        size = {"15m": 900, "1h": 3600}.get(period, 3600 * int(period[:-1]))
        recs = []
        for i, end in enumerate(ends.tolist()):
            rec: dict[str, Any] = {"measurement": "air_quality", "site_id": site,
                                   "pollutant": p, "period": period, "start": end - size,
                                   "ts": end, "capture_pct": float(pct[i]),
                                   "valid": bool(valid[i])}
            m = _f(mean[i])
            if m is not None:
                rec["mean"] = m
            if index is not None and index[i] > 0:
                rec["daqi"] = index[i]
            recs.append(rec)
        return recs

    def _note_indices(self, p: str, period: str, ends: NDArray[np.float64], index: list[int],
                      carry: dict[str, Any]) -> None:
        parts = carry.setdefault("daqi_parts", {})
        hours = np.ceil(ends / 3600.0) * 3600.0 if period == "15m" else ends
        # An hour whose parts were already dropped (see _daqi) is not corrected: with the
        # other pollutants' indices gone, a new slot would rewrite it from this one alone.
        kept_from = carry.get("daqi_kept_from", -np.inf)
        for h, i in zip(hours.tolist(), index, strict=True):
            if i > 0 and h >= kept_from:
                slot = parts.setdefault(str(int(h)), {})
                slot[p] = max(slot.get(p, 0), i)

    def _daqi(self, site: str, carry: dict[str, Any]) -> list[dict[str, Any]]:
        edge = carry.get("hour_edge")
        parts: dict[str, dict[str, int]] = carry.get("daqi_parts", {})
        if edge is None or not parts:
            return []
        written: dict[str, list[Any]] = carry.setdefault("daqi_written", {})
        out = []
        for hour in sorted(parts, key=int):
            if int(hour) > edge:
                continue
            slot = parts[hour]
            # the highest sub-index; ties go to the first pollutant in DAQI order
            pollutant = max((p for p in DAQI_PERIOD if p in slot), key=lambda p: slot[p])
            now: list[Any] = [int(slot[pollutant]), pollutant]
            if written.get(hour) != now:
                written[hour] = now
                out.append({"measurement": "daqi", "site_id": site, "ts": float(hour),
                            "index": now[0], "band": band_name(int(now[0])),
                            "pollutant": pollutant})
        keep_from = edge - _KEEP_HOURS * 3600
        carry["daqi_kept_from"] = max(carry.get("daqi_kept_from", -np.inf), keep_from)
        for d in (parts, written):
            for hour in [h for h in d if int(h) < keep_from]:
                del d[hour]
        return out
