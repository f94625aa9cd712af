"""The processing step shared by every kind of reading, free of Kafka and Faust.

:class:`Processor` turns a batch of consumed messages into dead letters, messages to
re-key, updated per-site state and aggregate records. The agent that drives it only moves
bytes: it sends what a step returns, awaits delivery, then stores the changed states.

Crash safety: each site's state remembers, per source partition, the offset of the last
message it applied. A state is stored only after the step's outputs were delivered, and
source offsets are committed only after that; so after a crash the replayed messages
that a stored state already holds are skipped (no double counting), and those it does
not hold are applied again and reproduce the same outputs (rewriting identical points).
"""

from __future__ import annotations

import base64
import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..readings import Batch, Heartbeat, Kind, RawMessage, Rejected, decode_batch
from .across import can_take, ingest_across
from .codec import decode_state, encode_state
from .windows import Closed, EngineConfig, SiteWindows

__all__ = ["Counters", "Pipeline", "Processor", "SiteState", "StepOutput"]

log = logging.getLogger(__name__)


def _carry_of(state: SiteState | None) -> dict[str, Any]:
    return state.carry if state is not None else {}


class Pipeline(Protocol):
    """A kind of reading: its window lengths, kept columns and aggregate kernels.

    An optional attribute ``buffered`` names the columns a site's open windows keep (the
    others are validated at decode and then dropped, before :meth:`on_accept` and the
    aggregates see the rows); without it every column is kept.
    Two optional methods let the processor do less per site (it looks them up with
    ``getattr``): ``aggregates_across(sites, closed, carries)``, the records of many sites'
    windows (:class:`~.across.ClosedAcross`) at once and what each site's carry (as it was
    before the step) takes, or None to be asked per site (see
    :meth:`TrafficPipeline.aggregates_across <thurrock_streams.traffic.TrafficPipeline>`);
    ``accept_is_noop()``, True when :meth:`on_accept` does nothing and may be skipped.
    """

    kind: Kind
    config: EngineConfig

    def on_accept(self, carry: dict[str, Any], ts: NDArray[np.float64],
                  cols: dict[str, NDArray[Any]]) -> None:
        """See the readings a site accepted in a step (before its windows are aggregated)."""
        ...

    def on_heartbeat(self, carry: dict[str, Any], ts: float) -> None:
        """See a heartbeat that raised the site's watermark to ``ts``."""
        ...

    @property
    def spans_of_its_own(self) -> bool:
        """True if it holds windows back beyond the engine's span (air, per pollutant):
        it is then also handed closings without new windows."""
        ...

    def aggregates(self, site: str, closed: list[Closed],
                   carry: dict[str, Any]) -> list[dict[str, Any]]:
        """Aggregate records (JSON-ready dicts) for the windows a step closed."""
        ...


@dataclass(slots=True)
class SiteState:
    """Everything remembered about one site, stored as one changelog record."""

    windows: SiteWindows = field(default_factory=SiteWindows)
    applied: dict[str, int] = field(default_factory=dict)
    carry: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> SiteState:
        """An independent copy (steps never change a state they were given)."""
        return SiteState(self.windows.copy(), dict(self.applied),
                         copy.deepcopy(self.carry) if self.carry else {})

    def encode(self) -> bytes:
        """The whole state as one TSS1 record (:mod:`.codec`), the format the readings
        agents stored before base and delta records (:mod:`.chain`, which still reads it):
        tests and benchmarks use it as a state's exact bytes.
        """
        return encode_state({"w": self.windows.to_state(), "applied": self.applied,
                             "carry": self.carry})

    @classmethod
    def decode(cls, data: bytes) -> SiteState:
        """Rebuild a state stored by :meth:`encode`."""
        d = decode_state(data)
        return cls(SiteWindows.from_state(d["w"]), {k: int(v) for k, v in d["applied"].items()},
                   d["carry"])


@dataclass
class Counters:
    """The accounting invariant's counters (CONTRACT.md §2), since the process started.

    ``readings_in`` = ``accepted`` + sum of ``deadlettered``, where a message that cannot
    be read at all counts as one reading. Messages re-keyed to their site's partition
    are counted where they are processed; replays of already-applied messages are
    counted in ``replayed_skipped`` only. Heartbeats are no readings (CONTRACT.md §3):
    ``heartbeats_in`` = ``heartbeats`` (applied, including those that changed nothing)
    + sum of ``heartbeats_deadlettered``.
    """

    readings_in: int = 0
    accepted: int = 0
    deadlettered: dict[str, int] = field(default_factory=dict)
    rekeyed_messages: int = 0
    replayed_skipped: int = 0
    windows_closed: int = 0
    heartbeats_in: int = 0
    heartbeats: int = 0
    heartbeats_deadlettered: dict[str, int] = field(default_factory=dict)

    def add_dead(self, reason: str, n: int = 1) -> None:
        """Count ``n`` dead-lettered readings with ``reason``."""
        self.deadlettered[reason] = self.deadlettered.get(reason, 0) + n

    def add(self, other: Counters) -> None:
        """Add the counts of ``other`` (one finished step) to these."""
        self.readings_in += other.readings_in
        self.accepted += other.accepted
        for reason, n in other.deadlettered.items():
            self.add_dead(reason, n)
        self.rekeyed_messages += other.rekeyed_messages
        self.replayed_skipped += other.replayed_skipped
        self.windows_closed += other.windows_closed
        self.heartbeats_in += other.heartbeats_in
        self.heartbeats += other.heartbeats
        for reason, n in other.heartbeats_deadlettered.items():
            self.heartbeats_deadlettered[reason] = (
                self.heartbeats_deadlettered.get(reason, 0) + n)


@dataclass
class StepOutput:
    """What one step produced, in the order the agent must deliver it.

    ``counts`` are the step's own counts; the processor adds them to its counters only
    when the step completes, so a step that fails (and is retried message by message)
    counts nothing.
    """

    aggregates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deadletters: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    rekey: list[tuple[str, RawMessage]] = field(default_factory=list)
    changed: dict[str, SiteState] = field(default_factory=dict)
    counts: Counters = field(default_factory=Counters)
    dead_values: set[tuple[str, int, int, bool]] = field(default_factory=set)
    """Messages whose bytes a dead letter of this step already carries."""


#: Original bytes a dead-letter record carries at most: base64 makes 4/3 of it, and the
#: record must stay under the producers' 1 MiB default limit (else it cannot be sent).
MAX_DEAD_VALUE = 600_000
#: A frame's later dead-lettered rows in one step repeat its bytes only up to this size;
#: above it they point to the step's first dead letter of the frame (which has them).
MAX_REPEATED_VALUE = 64 * 1024


def dead_letter(m: RawMessage, reason: str, detail: str, row: int | None,
                repeat: bool = True) -> dict[str, Any]:
    """The dead-letter record of CONTRACT.md §1.

    ``value_b64`` holds the original bytes; beyond :data:`MAX_DEAD_VALUE` their start only
    (the detail says so, and where the whole message is). With ``repeat`` false (a later
    bad row of a large frame), none: the detail names the record that has them.
    """
    value = m.value or b""
    if not repeat:
        detail += (f" (the frame's {len(value)} bytes are in its first dead letter of this "
                   "step, with the same topic, partition and offset)")
        value = b""
    elif len(value) > MAX_DEAD_VALUE:
        detail += (f" (value_b64 holds the first {MAX_DEAD_VALUE} of {len(value)} bytes; "
                   f"the whole message is {m.topic}[{m.partition}]@{m.offset})")
        value = value[:MAX_DEAD_VALUE]
    return {
        "reason": reason, "detail": detail, "topic": m.topic, "partition": m.partition,
        "offset": m.offset, "row": row, "value_b64": base64.b64encode(value).decode("ascii"),
    }


def _source(m: RawMessage) -> str:
    return f"{m.topic}:{m.partition}"


class Processor:
    """Runs steps of one pipeline over the sites of the partitions this worker owns."""

    def __init__(self, pipeline: Pipeline,
                 partitions_of: Callable[[list[str]], list[int]] | None = None,
                 counters: Counters | None = None, across: bool = True) -> None:
        self.pipeline = pipeline
        self.buffered: tuple[str, ...] | None = getattr(pipeline, "buffered", None)
        self.partitions_of = partitions_of
        """The partition each of many sites belongs to (its key's, as the producer's
        partitioner picks it); None: every site is this worker's (no re-keying)."""
        self.counters = counters if counters is not None else Counters()
        self.across = across
        """True: step the sites of a batch together (:mod:`.across`); False: one site
        at a time, as before (the judge the property tests compare against)."""

    def step(self, messages: list[RawMessage], states: Mapping[str, SiteState],
             now: float) -> StepOutput:
        """Process a batch in arrival order; ``states`` are read, never mutated in place."""
        out = StepOutput()
        batch = decode_batch(self.pipeline.kind, messages)
        if self.buffered is not None:
            batch.cols = {name: batch.cols[name] for name in self.buffered}
        site_of = self._route(messages, batch, out)
        rejected_by_site: dict[str, list[Rejected]] = {}
        for rej in batch.rejected:
            site = site_of.get(rej.msg) if rej.site is not None else None
            if site is None:
                out.counts.readings_in += 1
                self._dead(out, messages[rej.msg], rej.reason, rej.detail, rej.row)
            elif site != "":
                rejected_by_site.setdefault(site, []).append(rej)
        beats_by_site: dict[str, list[Heartbeat]] = {}
        for hb in batch.heartbeats:
            if site_of.get(hb.msg):
                beats_by_site.setdefault(hb.site, []).append(hb)
        # Per message, not per row: which messages are processed here, and their site.
        code_of: dict[str, int] = {}
        msg_code = np.full(len(messages), -1, dtype=np.int64)
        for i, site in site_of.items():
            if site:
                msg_code[i] = code_of.setdefault(site, len(code_of))
        row_code = msg_code[batch.msg]
        keep = row_code >= 0
        if not keep.all():  # rows of messages handled elsewhere (re-keyed, dead-lettered)
            batch, row_code = batch.take(keep), row_code[keep]
        if self.across:
            self._step_across(batch, row_code, list(code_of), rejected_by_site,
                              beats_by_site, messages, states, now, out)
            self.counters.add(out.counts)
            return out
        no_rows = batch.take(np.zeros(0, dtype=np.int64))
        for site, rows in _by_site(batch, row_code, list(code_of)):
            self._site_step(site, rows, rejected_by_site.pop(site, []),
                            beats_by_site.pop(site, []), messages, states, now, out)
        for site in sorted(set(rejected_by_site) | set(beats_by_site)):
            self._site_step(site, no_rows, rejected_by_site.get(site, []),
                            beats_by_site.get(site, []), messages, states, now, out)
        self.counters.add(out.counts)
        return out

    def _step_across(self, batch: Batch, code: NDArray[np.int64], names: list[str],
                     rejected_by_site: dict[str, list[Rejected]],
                     beats_by_site: dict[str, list[Heartbeat]], messages: list[RawMessage],
                     states: Mapping[str, SiteState], now: float, out: StepOutput) -> None:
        """The sites of a batch stepped together: the same outputs, in the same order, as
        :meth:`_site_step` one site at a time (sites in name order, those with readings
        first), with a fixed number of numpy calls for all of them.

        Taken together: sites with readings and no heartbeat, and sites whose only event
        is one heartbeat (for a pipeline without spans of its own); stepped on their own
        by :meth:`_site_step`, in their place: sites with readings and heartbeats (their
        windows close at each heartbeat: records and dead-letter details follow those
        cuts), and any whose state :func:`.across.can_take` refuses.
        """
        cfg = self.pipeline.config
        per_code = np.bincount(code, minlength=len(names))
        with_rows = sorted(names[c] for c in np.flatnonzero(per_code).tolist())
        others = sorted((set(rejected_by_site) | set(beats_by_site)) - set(with_rows))
        # The sites stepped together (position k, in output order) and their old states.
        pos: dict[str, int] = {}
        olds: list[SiteState | None] = []
        alone: set[str] = set()
        takes = can_take(cfg, batch.cols)
        for site in with_rows:
            old = states.get(site)
            if site in beats_by_site or (old is not None and not takes(old.windows)):
                alone.add(site)
                continue
            pos[site] = len(olds)
            olds.append(old)
        beat_of: dict[int, Heartbeat] = {}  # position -> the site's one heartbeat
        if not self.pipeline.spans_of_its_own:
            for site in others:
                beats = beats_by_site.get(site)
                if beats is None or len(beats) != 1:
                    continue
                old = states.get(site)
                if old is None or takes(old.windows):
                    beat_of[len(olds)] = beats[0]
                    pos[site] = len(olds)
                    olds.append(old)
        pos_of_code = np.array([pos.get(name, -1) for name in names], dtype=np.int64)
        row_pos = pos_of_code[code]
        # Which messages these sites have not applied yet, in arrival order per source.
        msg_pos = np.full(len(messages), -1, dtype=np.int64)
        msg_pos[batch.msg] = row_pos
        for k, hb in beat_of.items():
            msg_pos[hb.msg] = k
        for site, k in pos.items():
            for rej in rejected_by_site.get(site, ()):
                msg_pos[rej.msg] = k
        applied = [{} if o is None else dict(o.applied) for o in olds]
        fresh = np.zeros(len(messages), dtype=np.bool_)
        mp = msg_pos.tolist()
        for i in np.flatnonzero(msg_pos >= 0).tolist():
            m = messages[i]
            src = _source(m)
            done = applied[mp[i]]
            if m.offset > done.get(src, -1):
                fresh[i] = True
                done[src] = m.offset
        ours = row_pos >= 0
        take = ours & fresh[batch.msg]
        out.counts.replayed_skipped += int(np.count_nonzero(ours) - np.count_nonzero(take))
        # Every site's fresh rows at once, grouped by site (stable: arrival order kept),
        # and the heartbeats that raise a watermark (SiteWindows.heartbeat).
        k_n = len(olds)
        beat = np.full(k_n, -np.inf)
        skew = now + cfg.max_clock_skew_s
        for k, hb in beat_of.items():
            old = olds[k]
            if fresh[hb.msg] and not hb.ts > skew and hb.ts > (
                    -np.inf if old is None else old.windows.watermark):
                beat[k] = hb.ts
        n_rows = np.bincount(row_pos[take], minlength=k_n) if k_n else np.zeros(0, np.int64)
        stepped = (n_rows > 0) | (beat > -np.inf)
        sub = np.cumsum(stepped) - 1  # position among the sites stepped
        if bool(take.all()) and bool((row_pos[1:] >= row_pos[:-1]).all()):
            rows, sub_of_row = batch, sub[row_pos]  # already grouped by site, in site order
        else:
            order = np.flatnonzero(take)[np.argsort(row_pos[take], kind="stable")]
            rows = batch.take(order)
            sub_of_row = sub[row_pos[order]]
        stepped_l = stepped.tolist()
        sub_l = sub.tolist()
        res = None
        if stepped.any():
            res = ingest_across(cfg, [SiteWindows() if (o := olds[k]) is None else o.windows
                                      for k in np.flatnonzero(stepped).tolist()],
                                sub_of_row, rows.ts, rows.cols, now, beat[stepped])
        bounds = np.concatenate(([0], np.cumsum(n_rows[stepped]))).tolist()
        bad: dict[int, list[int]] = {}
        recs: Any = None  # the pipeline's records of all sites (TrafficPipeline: AcrossRecords)
        accept_noop = False
        acc_l: list[int] = []
        if res is not None:
            out.counts.readings_in += len(rows)
            out.counts.accepted += int(res.accepted_per_site.sum())
            out.counts.windows_closed += sum(int(c.starts.size) for c in res.closed)
            sub_row = sub_of_row.tolist()
            for j in np.flatnonzero(res.future | res.late).tolist():
                bad.setdefault(sub_row[j], []).append(j)
            across = getattr(self.pipeline, "aggregates_across", None)
            if across is not None:
                sites_j = [s for s in pos if stepped_l[pos[s]]]
                carries = [_carry_of(olds[pos[s]]) for s in sites_j]
                recs = across(sites_j, res.closed, carries)
            accept_noop = getattr(self.pipeline, "accept_is_noop", lambda: False)()
            acc_l = res.accepted_per_site.tolist()

        def together(site: str) -> None:
            """Outputs and new state of a site stepped together, in _site_step's order."""
            k = pos[site]
            old = olds[k]
            self._rejected(out, rejected_by_site.pop(site, []), fresh, messages)
            hb = beat_of.get(k)
            if hb is not None:
                beats_by_site.pop(site, None)
                if not fresh[hb.msg]:
                    out.counts.replayed_skipped += 1
                elif hb.ts > skew:
                    self._dead_beat(out, messages[hb.msg], "future",
                                    _time_detail("future", hb.ts, SiteWindows(), now))
                else:
                    out.counts.heartbeats_in += 1
                    out.counts.heartbeats += 1
            if not stepped_l[k]:  # nothing to ingest (all replayed, or a no-op beat)
                new = SiteState() if old is None else old.copy()
                new.applied = applied[k]
                out.changed[site] = new
                return
            if res is None:  # stepped implies a result
                raise RuntimeError("no result for a site stepped together")
            carry = copy.deepcopy(old.carry) if old is not None and old.carry else {}
            j = sub_l[k]
            windows = res.windows[j]
            a, z = bounds[j], bounds[j + 1]
            rows_bad = bad.get(j)
            if rows_bad:  # as _ingest: the site's future rows, then its late ones
                for verdict, reason in ((res.future, "future"), (res.late, "late")):
                    self._dead_rows(out, messages, rows, [r for r in rows_bad if verdict[r]],
                                    reason, windows, now)
            if acc_l[j] and not accept_noop:
                ok = ~(res.future[a:z] | res.late[a:z])
                self.pipeline.on_accept(carry, rows.ts[a:z][ok],
                                        {name: v[a:z][ok] for name, v in rows.cols.items()})
            if hb is not None:  # stepped: it raised the watermark
                self.pipeline.on_heartbeat(carry, hb.ts)
            new = SiteState(windows, applied[k], carry)
            if recs is not None:
                recs.apply(j, carry)
                if recs.records[j]:
                    out.aggregates += [(site, rec) for rec in recs.records[j]]
            else:
                closed = [c for c in (ca.of_site(j) for ca in res.closed) if c is not None]
                if closed:
                    for rec in self.pipeline.aggregates(site, closed, new.carry):
                        out.aggregates.append((site, rec))
            out.changed[site] = new

        alone_rows = _rows_by_site(batch, code, names, alone)
        for site in with_rows:
            if site in alone:
                self._site_step(site, alone_rows[site], rejected_by_site.pop(site, []),
                                beats_by_site.pop(site, []), messages, states, now, out)
            else:
                together(site)
        no_rows = batch.take(np.zeros(0, dtype=np.int64))
        for site in others:
            if site in pos:
                together(site)
            else:
                self._site_step(site, no_rows, rejected_by_site.get(site, []),
                                beats_by_site.get(site, []), messages, states, now, out)

    def step_isolating(self, messages: list[RawMessage], states: Mapping[str, SiteState],
                       now: float) -> StepOutput:
        """:meth:`step`; if it raises, each message on its own, in arrival order.

        The processor never stops on input: a message whose step fails even alone is
        dead-lettered ``internal`` and counts as one reading. The failed batch attempt
        counts nothing (a step adds its counts only when it completes).
        """
        try:
            return self.step(messages, states, now)
        except Exception:
            log.exception("%s: a batch of %d messages failed; retrying one by one",
                          self.pipeline.kind, len(messages))
        merged = StepOutput()
        for m in messages:
            try:
                o = self.step([m], _Overlay(merged.changed, states), now)
            except Exception as exc:
                log.exception("%s: message %s:%d@%d failed", self.pipeline.kind, m.topic,
                              m.partition, m.offset)
                self.counters.readings_in += 1
                self.counters.add_dead("internal")
                merged.deadletters.append((m.key, dead_letter(
                    m, "internal", f"processing failed: {exc!r}"[:500], None)))
                continue
            merged.aggregates += o.aggregates
            merged.deadletters += o.deadletters
            merged.rekey += o.rekey
            merged.changed.update(o.changed)
        return merged

    def run_on(self, site: str, state: SiteState, watermark: float) -> StepOutput:
        """Close the windows a quiet site's running ``watermark`` passed (CONTRACT.md §3).

        Nothing changes (no state to store) unless a window closes.
        """
        out = StepOutput()
        if not state.windows.closes_at(self.pipeline.config, watermark):
            return out
        new = state.copy()
        closed = new.windows.run_on(self.pipeline.config, watermark)
        self._emit(site, closed, new, out)
        out.changed[site] = new
        self.counters.add(out.counts)
        return out

    def _route(self, messages: list[RawMessage], batch: Batch,
               out: StepOutput) -> dict[int, str]:
        """Map message index to its site ('' when it is re-keyed elsewhere)."""
        site_of: dict[int, str] = {}
        if len(batch):
            idx = batch.msg  # rows in message order (decode_batch): a message's rows together
            if bool((idx[1:] >= idx[:-1]).all()):
                first = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
            else:
                first = np.unique(idx, return_index=True)[1]
            site_of = dict(zip(idx[first].tolist(), batch.site[first].tolist(), strict=True))
        for rej in batch.rejected:
            if rej.site is not None:
                site_of.setdefault(rej.msg, rej.site)
        for hb in batch.heartbeats:
            site_of[hb.msg] = hb.site
        if self.partitions_of is None:
            return site_of
        # Each site's partition once (a batch holds many messages of a site).
        sites = list(dict.fromkeys(site_of.values()))
        part = dict(zip(sites, self.partitions_of(sites), strict=True))
        # In arrival (= source offset) order: the site's partition skips any message of a
        # source partition below one it already applied from there.
        for i in sorted(site_of):
            site = site_of[i]
            m = messages[i]
            if not m.forwarded and part[site] != m.partition:
                out.rekey.append((site, m))
                out.counts.rekeyed_messages += 1
                site_of[i] = ""
        return site_of

    def _rejected(self, out: StepOutput, rejects: Iterable[Rejected], fresh: NDArray[np.bool_],
                  messages: list[RawMessage]) -> None:
        """Dead-letter a site's rejected rows and heartbeats (those of fresh messages)."""
        for rej in rejects:
            if not fresh[rej.msg]:
                out.counts.replayed_skipped += 1
            elif rej.heartbeat:
                self._dead_beat(out, messages[rej.msg], rej.reason, rej.detail)
            else:
                out.counts.readings_in += 1
                self._dead(out, messages[rej.msg], rej.reason, rej.detail, rej.row)

    def _site_step(self, site: str, rows: Batch, rejects: list[Rejected],
                   beats: list[Heartbeat], messages: list[RawMessage],
                   states: Mapping[str, SiteState], now: float, out: StepOutput) -> None:
        old = out.changed.get(site) or states.get(site)
        new = SiteState() if old is None else old.copy()
        fresh = self._fresh_messages(new, messages, rows, rejects, beats, out.counts)
        self._rejected(out, rejects, fresh, messages)
        fresh_rows = fresh[rows.msg]
        if not fresh_rows.all():
            rows = rows.take(fresh_rows)
        beats = [b for b in beats if fresh[b.msg]]
        if not beats:
            self._ingest(site, rows, new, messages, now, out)
        else:  # readings and heartbeats in arrival order
            cuts = np.searchsorted(rows.msg, [b.msg for b in beats]).tolist()
            start = 0
            for b, cut in zip(beats, cuts, strict=True):
                self._ingest(site, rows.take(np.arange(start, cut)), new, messages, now, out)
                self._beat(site, b, new, messages[b.msg], now, out)
                start = cut
            self._ingest(site, rows.take(np.arange(start, len(rows))), new, messages, now, out)
        out.changed[site] = new

    def _ingest(self, site: str, rows: Batch, new: SiteState, messages: list[RawMessage],
                now: float, out: StepOutput) -> None:
        out.counts.readings_in += len(rows)
        if not len(rows):
            return
        res = new.windows.ingest(self.pipeline.config, rows.ts, rows.cols, now)
        for verdict, reason in ((res.future, "future"), (res.late, "late")):
            self._dead_rows(out, messages, rows, np.flatnonzero(verdict).tolist(), reason,
                            new.windows, now)
        ok = res.accepted
        out.counts.accepted += int(ok.sum())
        if ok.any():
            cols = {k: v[ok] for k, v in rows.cols.items()}
            self.pipeline.on_accept(new.carry, rows.ts[ok], cols)
        self._emit(site, res.closed, new, out)

    def _beat(self, site: str, b: Heartbeat, new: SiteState, m: RawMessage, now: float,
              out: StepOutput) -> None:
        raised = b.ts > new.windows.watermark
        future, closed = new.windows.heartbeat(self.pipeline.config, b.ts, now)
        if future:
            self._dead_beat(out, m, "future", _time_detail("future", b.ts, new.windows, now))
            return
        out.counts.heartbeats_in += 1
        out.counts.heartbeats += 1
        if raised:
            self.pipeline.on_heartbeat(new.carry, b.ts)
        self._emit(site, closed, new, out)

    @staticmethod
    def _fresh_messages(state: SiteState, messages: list[RawMessage], rows: Batch,
                        rejects: list[Rejected], beats: list[Heartbeat],
                        counts: Counters) -> NDArray[np.bool_]:
        """Which messages (mask over the batch) this site has not applied yet.

        Records them as applied. One Python step per message, none per row.
        """
        idx = np.unique(rows.msg).tolist()
        if rejects or beats:
            idx = sorted(set(idx) | {r.msg for r in rejects} | {b.msg for b in beats})
        fresh = np.zeros(len(messages), dtype=np.bool_)
        applied = state.applied
        for i in idx:
            m = messages[i]
            src = _source(m)
            if m.offset > applied.get(src, -1):
                fresh[i] = True
                applied[src] = m.offset
        counts.replayed_skipped += int(rows.msg.size - np.count_nonzero(fresh[rows.msg]))
        counts.replayed_skipped += sum(not fresh[b.msg] for b in beats)
        return fresh

    def _emit(self, site: str, closed: list[Closed], state: SiteState, out: StepOutput) -> None:
        if not closed:
            return
        out.counts.windows_closed += sum(c.starts.size for c in closed)
        if not any(c.starts.size for c in closed) and not self.pipeline.spans_of_its_own:
            return
        for rec in self.pipeline.aggregates(site, closed, state.carry):
            out.aggregates.append((site, rec))

    def _dead(self, out: StepOutput, m: RawMessage, reason: str, detail: str,
              row: int | None) -> None:
        out.counts.add_dead(reason)
        key = (m.topic, m.partition, m.offset, m.forwarded)
        repeat = key not in out.dead_values or len(m.value or b"") <= MAX_REPEATED_VALUE
        out.dead_values.add(key)
        out.deadletters.append((m.key, dead_letter(m, reason, detail, row, repeat)))

    def _dead_rows(self, out: StepOutput, messages: list[RawMessage], rows: Batch,
                   which: list[int], reason: str, windows: SiteWindows, now: float) -> None:
        """Dead-letter rows ``which`` of ``rows`` as ``future`` or ``late`` (``reason``),
        judged against the site's ``windows`` after the step."""
        for j in which:
            detail = _time_detail(reason, float(rows.ts[j]), windows, now)
            r = int(rows.row[j])
            self._dead(out, messages[int(rows.msg[j])], reason, detail, r if r >= 0 else None)

    def _dead_beat(self, out: StepOutput, m: RawMessage, reason: str, detail: str) -> None:
        c = out.counts
        c.heartbeats_in += 1
        c.heartbeats_deadlettered[reason] = c.heartbeats_deadlettered.get(reason, 0) + 1
        out.deadletters.append((m.key, dead_letter(m, reason, detail, None)))


class _Overlay(Mapping[str, SiteState]):
    """``top`` over ``base``: the states a fallback's earlier messages changed first."""

    def __init__(self, top: Mapping[str, SiteState], base: Mapping[str, SiteState]) -> None:
        self.top, self.base = top, base

    def __getitem__(self, site: str) -> SiteState:
        return self.top[site] if site in self.top else self.base[site]

    def __iter__(self) -> Iterator[str]:
        return iter(set(self.top) | set(self.base))

    def __len__(self) -> int:
        return len(set(self.top) | set(self.base))


def _by_site(batch: Batch, code: NDArray[np.int64],
             names: list[str]) -> list[tuple[str, Batch]]:
    """Split the rows by site (``code`` indexes ``names``), arrival order kept in each.

    Sites come in name order, as before; grouping works on small integer codes, not on
    the rows' site strings.
    """
    if not len(batch):
        return []
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(names))
    bounds = np.cumsum(counts)[:-1]
    parts = np.split(order, bounds)
    return [(names[c], batch.take(parts[c]))
            for c in sorted(range(len(names)), key=names.__getitem__) if counts[c]]


def _rows_by_site(batch: Batch, code: NDArray[np.int64], names: list[str],
                  wanted: set[str]) -> dict[str, Batch]:
    """The rows of the ``wanted`` sites (arrival order kept), one pass over the batch."""
    if not wanted:
        return {}
    code_of = {name: c for c, name in enumerate(names)}
    want = np.zeros(len(names), dtype=np.bool_)
    want[[code_of[s] for s in wanted]] = True
    sel = np.flatnonzero(want[code])
    order = sel[np.argsort(code[sel], kind="stable")]
    n = np.bincount(code[order], minlength=len(names))
    start = np.concatenate(([0], np.cumsum(n))).tolist()
    return {s: batch.take(order[start[code_of[s]]:start[code_of[s] + 1]]) for s in wanted}


def _time_detail(reason: str, ts: float, w: SiteWindows, now: float) -> str:
    if reason == "future":
        return f"ts={ts:.3f} is more than the allowed clock skew ahead of now={now:.3f}"
    return (f"ts={ts:.3f} falls in an already closed window (site watermark "
            f"{w.watermark:.3f}, closed up to {max(w.closed_until.values()):.3f})")
