"""The ``generate`` pipeline: registry sites -> readings -> faults -> ordered JSONL + summary."""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from thurrock_streams.registry import Registry

from ._seeds import Stream, rng_for, site_key
from .air import simulate_air
from .batch import Batch
from .clock import format_instant
from .errors import UsageError
from .expect import REASONS, expect_site
from .faults import FAULT_KINDS, FaultRates, apply_row_faults, plan_messages
from .feed import SiteMessages, merge
from .heartbeat import beat_times
from .traffic import simulate_traffic

__all__ = ["FeedOptions", "Summary", "build_feed", "select_sites", "write_feed"]

Progress = Callable[[int], None]
LIVE_FRAME_S = 10.0


@dataclass(frozen=True)
class FeedOptions:
    """Everything that decides the bytes of a generated feed."""

    start: float
    duration_s: float
    seed: int = 0
    frames: int = 0
    """Readings per message: 0 sends single readings, N >= 1 frames of up to N rows."""
    interval_s: float = 60.0
    """Air sampling interval, seconds."""
    rate_scale: float = 1.0
    episode_scale: float = 1.0
    sites: tuple[str, ...] = ()
    """Site-id patterns (shell wildcards) to keep; empty keeps every site."""
    faults: FaultRates = field(default_factory=FaultRates)
    lateness_s: float = 30.0
    max_skew_s: float = 300.0
    heartbeat_s: float = 0.0
    """Heartbeat interval, seconds: one heartbeat per site at every multiple of it (epoch-
    aligned); 0 sends none."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise UsageError("--seed must be a whole number >= 0")
        if self.frames < 0:
            raise UsageError("--frames must be >= 1 (or left out for single readings)")
        if not self.interval_s > 0:
            raise UsageError("--interval must be positive")
        if not (self.rate_scale >= 0 and self.episode_scale >= 0):
            raise UsageError("--rate-scale and --episodes must be >= 0")
        if not (self.heartbeat_s == 0 or 1 <= self.heartbeat_s < float("inf")):
            raise UsageError("--heartbeat-s must be 0 (no heartbeats) or at least 1 second")

    @property
    def end(self) -> float:
        """End of the simulated period (exclusive), epoch seconds."""
        return self.start + self.duration_s


@dataclass
class Summary:
    """What a run produced; written next to a generated file as ``FILE.summary.json``."""

    messages: int = 0
    """Kafka messages (lines of a file): readings, frames and heartbeats."""
    readings: int = 0
    """Records the processor accounts for as readings (heartbeats are not readings)."""
    heartbeats: int = 0
    """Heartbeat messages, counted apart from the readings (CONTRACT.md §3)."""
    faults: Counter[str] = field(default_factory=Counter)
    expected_deadletter: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def expected_accepted(self) -> int:
        """Readings the processor should count in aggregates."""
        return self.readings - sum(self.expected_deadletter.values())

    def to_json(self) -> dict[str, Any]:
        """Return the summary as a JSON-ready dict with every fault kind and reason present."""
        return {
            "messages": self.messages,
            "readings": self.readings,
            "heartbeats": self.heartbeats,
            "faults": {k: self.faults.get(k, 0) for k in FAULT_KINDS},
            "expected_deadletter": {k: self.expected_deadletter.get(k, 0) for k in REASONS},
            "expected_accepted": self.expected_accepted,
            **self.extra,
        }


def select_sites(registry: Registry, patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return the (traffic, air) site ids matching any pattern, sorted; all when none given."""
    def keep(sid: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(sid, p.strip()) for p in patterns)
    traffic = sorted(s for s in registry.traffic if keep(s))
    air = sorted(s for s in registry.air if keep(s))
    if patterns and not traffic and not air:
        raise UsageError(f"no site matches {', '.join(patterns)} (see `sensors-sim sites`)")
    return traffic, air


def site_batches(registry: Registry, opts: FeedOptions, start: float, end: float,
                 progress: Progress | None = None) -> list[Batch]:
    """Simulate the readings of every selected site in ``[start, end)``."""
    traffic_ids, air_ids = select_sites(registry, opts.sites)
    out = []
    for sid in traffic_ids:
        out.append(simulate_traffic(registry.traffic[sid], start, end, opts.seed,
                                    opts.rate_scale))
        if progress:
            progress(1)
    for sid in air_ids:
        mon = registry.air[sid]
        nearby = [registry.traffic[t] for t in mon.nearby_traffic if t in registry.traffic]
        out.append(simulate_air(mon, nearby, start, end, opts.seed, opts.interval_s,
                                opts.rate_scale, opts.episode_scale))
        if progress:
            progress(1)
    return out


def plan_site(batch: Batch, opts: FeedOptions, period: int, all_ids: list[str],
              span: tuple[float, float], skew_anchor: float | None, live: bool = False
              ) -> SiteMessages:
    """Apply a site's faults and cut its rows into messages (seeded per site and period).

    Live, a frame holds the rows of one 10-second slot at most and is sent when complete.
    With heartbeats (``opts.heartbeat_s``), one is wanted at every multiple of the interval
    in ``(span[0], span[1]]`` outside the site's dropout gaps, and no frame spans one.
    """
    key = site_key(batch.site_id)
    rows = apply_row_faults(batch, opts.faults, rng_for(opts.seed, key, Stream.FAULTS, period),
                            span, skew_anchor, opts.interval_s)
    others = [s for s in all_ids if s != batch.site_id]
    slots: list[NDArray[np.int64]] = []
    if live:
        slots.append(np.floor(rows.deliver / LIVE_FRAME_S).astype(np.int64))
    beats = np.zeros(0)
    if opts.heartbeat_s:
        slots.append(np.floor(rows.deliver / opts.heartbeat_s).astype(np.int64))
        beats = beat_times(span[0], span[1], opts.heartbeat_s)
        off_air = np.zeros(beats.size, dtype=bool)
        for a, b in rows.gaps.tolist():
            off_air |= (beats >= a) & (beats < b)
        beats = beats[~off_air]
    plan = plan_messages(len(rows.batch), opts.frames, opts.faults,
                         rng_for(opts.seed, key, Stream.MESSAGES, period), others,
                         _buckets(slots))
    return SiteMessages(rows.batch, plan, rows.deliver, live, rows.marks, rows.dropped_ts,
                        beats)


def _buckets(slots: list[NDArray[np.int64]]) -> NDArray[np.int64] | None:
    """One bucket number per row, new wherever any of the slot numbers changes."""
    if not slots:
        return None
    change = np.zeros(slots[0].size, dtype=bool)
    for s in slots:
        change[1:] |= s[1:] != s[:-1]
    return np.cumsum(change).astype(np.int64)


def build_feed(registry: Registry, opts: FeedOptions, progress: Progress | None = None
               ) -> tuple[Iterator[bytes], Summary]:
    """Simulate, fault and plan the whole feed; return its lines (lazily) and its summary."""
    sites: list[SiteMessages] = []
    summary = Summary()
    all_ids = sorted([*registry.traffic, *registry.air])
    for batch in site_batches(registry, opts, opts.start, opts.end, progress):
        msgs = plan_site(batch, opts, 0, all_ids, (opts.start, opts.end), skew_anchor=opts.end)
        exp = expect_site(msgs.batch, msgs.plan, opts.end, lateness_s=opts.lateness_s,
                          max_skew_s=opts.max_skew_s,
                          beats=(msgs.beats.ts, msgs.beat_rows()))
        summary.messages += len(msgs.plan) + len(msgs.beats)
        summary.readings += exp.readings
        summary.heartbeats += exp.heartbeats
        summary.faults += msgs.fault_counts()
        summary.expected_deadletter += exp.deadletter or Counter()
        sites.append(msgs)
    summary.extra = {
        "seed": opts.seed, "start": format_instant(opts.start), "duration_s": opts.duration_s,
        "end": format_instant(opts.end), "frames": opts.frames, "interval_s": opts.interval_s,
        "rate_scale": opts.rate_scale, "episode_scale": opts.episode_scale,
        "heartbeat_s": opts.heartbeat_s,
        "sites": {"traffic": sum(b.batch.topic == "traffic.readings" for b in sites),
                  "air": sum(b.batch.topic == "air.readings" for b in sites)},
        "fault_rates": opts.faults.as_dict(),
        "assumes": {"allowed_lateness_s": opts.lateness_s, "max_clock_skew_s": opts.max_skew_s,
                    "replay": "--speed max; with skew ahead also --rebase-now"},
    }
    return (line for *_, line in merge(sites)), summary


def write_feed(path: Path, registry: Registry, opts: FeedOptions,
               on_sites: Progress | None = None, on_lines: Progress | None = None,
               on_planned: Callable[[Summary], None] | None = None) -> Summary:
    """Write the feed to ``path`` (JSONL) and its summary to ``path.summary.json``.

    The callbacks report progress: sites simulated, the summary once every message is
    planned (before writing starts), and lines written.
    """
    lines, summary = build_feed(registry, opts, on_sites)
    if on_planned:
        on_planned(summary)
    with path.open("wb") as fh:
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == 10_000:
                fh.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
                if on_lines:
                    on_lines(10_000)
        if chunk:
            fh.write(b"\n".join(chunk) + b"\n")
            if on_lines:
                on_lines(len(chunk))
    summary_path = path.with_name(path.name + ".summary.json")
    summary_path.write_bytes(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return summary
