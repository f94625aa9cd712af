"""The traffic pipeline: 1-minute and 15-minute windows per detector site (CONTRACT.md §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .engine.across import ClosedAcross
from .engine.windows import Closed, EngineConfig
from .kernels.traffic import traffic_windows
from .qc import window_runs, window_runs_across
from .readings import Kind
from .registry import DEFAULT_FREE_FLOW_KPH, Registry, load_registry

__all__ = ["TRAFFIC_FIELDS", "WINDOW_TAGS", "AcrossRecords", "TrafficPipeline"]

#: Window lengths in seconds and their InfluxDB ``window`` tag.
WINDOW_TAGS: dict[int, str] = {60: "1m", 900: "15m"}

#: Float fields of a traffic aggregate, in output order (``count`` is the integer one).
TRAFFIC_FIELDS = (
    "flow_vph", "mean_speed_kph", "space_mean_speed_kph", "p85_speed_kph", "hgv_pct",
    "density_vpkm", "congestion_index",
)


@dataclass
class AcrossRecords:
    """What :meth:`TrafficPipeline.aggregates_across` made: per site, its records and the
    flat-line runs its carry takes (None: the carry stays as it was)."""

    records: list[list[dict[str, Any]]]
    runs: list[dict[str, list[float]] | None]

    def apply(self, k: int, carry: dict[str, Any]) -> None:
        """Put site ``k``'s new runs in its (copied) carry, as :func:`window_runs` would."""
        got = self.runs[k]
        if got is not None:
            carry.setdefault("runs", {}).update(got)


@dataclass
class TrafficPipeline:
    """Vehicle detections in, traffic aggregates out."""

    config: EngineConfig
    registry: Registry = field(default_factory=load_registry)
    kind: Kind = "traffic"
    #: Flat-line check (:mod:`.qc`): runs of this many identical values are reported.
    stuck_samples: int | None = None
    stuck_fields: tuple[str, ...] = ()

    @classmethod
    def create(cls, allowed_lateness_s: float, max_clock_skew_s: float,
               stuck_samples: int | None = None,
               stuck_fields: tuple[str, ...] = ()) -> TrafficPipeline:
        """A pipeline with the contract's window lengths."""
        return cls(EngineConfig(tuple(WINDOW_TAGS), allowed_lateness_s, max_clock_skew_s),
                   stuck_samples=stuck_samples,
                   stuck_fields=tuple(f for f in stuck_fields if f == "speed_kph"))

    def on_accept(self, carry: dict[str, Any], ts: NDArray[np.float64],
                  cols: dict[str, NDArray[Any]]) -> None:
        """Traffic keeps no state beyond the windows and the flat-line runs."""

    def accept_is_noop(self) -> bool:
        """True unless a subclass watches accepted readings (the processor may then skip
        :meth:`on_accept`)."""
        return type(self).on_accept is TrafficPipeline.on_accept

    #: See :class:`~thurrock_streams.engine.processor.Pipeline`.
    spans_of_its_own: ClassVar[bool] = False
    #: The columns a site's open windows keep: what the aggregates and the flat-line
    #: check read (lane and length are checked at decode, then not needed).
    buffered: ClassVar[tuple[str, ...]] = ("speed_kph", "class")

    def on_heartbeat(self, carry: dict[str, Any], ts: float) -> None:
        """The engine's span is traffic's: nothing more to note."""

    def aggregates(self, site: str, closed: list[Closed],
                   carry: dict[str, Any]) -> list[dict[str, Any]]:
        """One record per closed window: the §4 fields, undefined ones left out."""
        out: list[dict[str, Any]] = []
        free_flow = self.registry.free_flow_kph(site)
        for c in closed:
            m = traffic_windows(c.index(), c.cols["speed_kph"], c.cols["class"], c.starts.size,
                                c.size, free_flow)
            columns = {name: getattr(m, name).tolist() for name in TRAFFIC_FIELDS}
            counts = m.count.tolist()
            runs = self._runs(c, carry)
            for i, (start, end) in enumerate(zip(c.starts.tolist(), c.ends.tolist(),
                                                  strict=True)):
                rec: dict[str, Any] = {"site_id": site, "window": WINDOW_TAGS[c.size],
                                       "start": start, "ts": end, "count": counts[i]}
                for name in TRAFFIC_FIELDS:
                    v = columns[name][i]
                    if v == v:  # NaN: undefined for this window, so absent
                        rec[name] = v
                if runs and any(r[i] >= self.stuck_samples for r in runs.values()):
                    # QC marks for the alert agent: not a field, so the sink leaves it out
                    rec["qc"] = {"stuck": {f: int(r[i]) for f, r in runs.items()
                                           if r[i] >= self.stuck_samples}}
                out.append(rec)
        return out

    def aggregates_across(self, sites: list[str], closed: list[ClosedAcross],
                          carries: list[dict[str, Any]]) -> AcrossRecords | None:
        """:meth:`aggregates` of many sites' windows with one kernel call per window length:
        the records of site ``k`` (``sites[k]``, whose carry before the step is
        ``carries[k]``), in the same order and bit for bit, and the flat-line runs to put in
        each site's carry (:attr:`AcrossRecords.runs`).

        None when that cannot be so: a subclass that makes its own records, or that sees
        accepted readings or heartbeats (its carry could then change before the windows
        are aggregated, while this reads the carry as it was before the step).
        """
        cls = type(self)
        if (cls.aggregates is not TrafficPipeline.aggregates
                or cls.on_accept is not TrafficPipeline.on_accept
                or cls.on_heartbeat is not TrafficPipeline.on_heartbeat):
            return None
        out: list[list[dict[str, Any]]] = [[] for _ in sites]
        runs_after: list[dict[str, list[float]] | None] = [None] * len(sites)
        # Registry.free_flow_kph of every site, with one dict lookup each
        known = {sid: t.free_flow_kph for sid, t in self.registry.traffic.items()}
        free_flow = np.array([known.get(s, DEFAULT_FREE_FLOW_KPH) for s in sites],
                             dtype=np.float64)
        stuck = self.stuck_samples
        for c in closed:
            if not c.starts.size:
                continue
            m = traffic_windows(c.win, c.cols["speed_kph"], c.cols["class"], c.starts.size,
                                c.size, free_flow[c.site])
            columns = [(name, getattr(m, name).tolist()) for name in TRAFFIC_FIELDS]
            peaks: list[tuple[str, list[int]]] = []
            if stuck is not None and c.size == 60:
                peaks = self._runs_across(c, carries, runs_after)
            tag = WINDOW_TAGS[c.size]
            for i, (k, start, end, count) in enumerate(zip(
                    c.site.tolist(), c.starts.tolist(), (c.starts + c.size).tolist(),
                    m.count.tolist(), strict=True)):
                rec: dict[str, Any] = {"site_id": sites[k], "window": tag, "start": start,
                                       "ts": end, "count": count}
                for name, values in columns:
                    v = values[i]
                    if v == v:  # NaN: undefined for this window, so absent
                        rec[name] = v
                if peaks and stuck is not None and any(p[i] >= stuck for _, p in peaks):
                    rec["qc"] = {"stuck": {f: p[i] for f, p in peaks if p[i] >= stuck}}
                out[k].append(rec)
        return AcrossRecords(out, runs_after)

    def _runs_across(self, c: ClosedAcross, carries: list[dict[str, Any]],
                     runs_after: list[dict[str, list[float]] | None]) -> list[
                         tuple[str, list[int]]]:
        """:meth:`_runs` of every site's 1-minute windows: per checked field, the peak run
        of each window; ``runs_after[k]`` gets site ``k``'s new runs (an empty dict for a
        site with windows but no measured value: its carry gets its ``runs`` all the same,
        as :func:`window_runs` sets it)."""
        nsites = len(carries)
        has_windows = np.diff(c.win_bounds) > 0
        row_site = np.repeat(np.arange(nsites, dtype=np.int64), np.diff(c.row_bounds))
        for k in np.flatnonzero(has_windows).tolist():
            runs_after[k] = {}
        peaks = []
        for f in self.stuck_fields:
            before = [carry.get("runs", {}).get(f) for carry in carries]
            p, after = window_runs_across(before, row_site, c.ts, c.cols[f], c.win,
                                          c.starts.size)
            for k, got in enumerate(after):
                if got is not None:
                    runs = runs_after[k]
                    if runs is not None:
                        runs[f] = got
            peaks.append((f, p.tolist()))
        return peaks

    def _runs(self, c: Closed, carry: dict[str, Any]) -> dict[str, NDArray[np.int64]]:
        """Flat-line runs per 1-minute window of the checked fields (vehicle counts are
        never checked: an empty road at night is real)."""
        if self.stuck_samples is None or c.size != 60:
            return {}
        return {f: window_runs(carry, f, c.ts, c.cols[f], c.starts, c.size)
                for f in self.stuck_fields}
