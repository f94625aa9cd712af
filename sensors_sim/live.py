"""The ``run`` loop: live, now-stamped readings from the same models, paced to the clock.

Readings are simulated in 5-minute blocks (faults included, seeded per block) and each
message is sent when the wall clock reaches its delivery time; a frame holds at most one
10-second slot of a site and is sent when complete. A clock skewed ahead stamps a reading
10 min–2 h into the future, which the processor dead-letters as ``future``.

With ``opts.heartbeat_s`` each site also sends a heartbeat at every multiple of that
interval of the wall clock, stamped with that instant, once every reading of the site
stamped before it has gone (:mod:`sensors_sim.heartbeat`); a block ``[a, b)`` sends those
in ``(a, b]``. No frame spans a heartbeat instant, and none is sent inside a dropout gap.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from thurrock_streams.registry import Registry

from .air import simulate_air
from .batch import Batch
from .clock import format_instant
from .expect import Expectation, expect_site
from .feed import SiteMessages, merge
from .generate import FeedOptions, Summary, plan_site, select_sites
from .publish import Sink, message_from_line
from .traffic import simulate_traffic

__all__ = ["BLOCK_S", "LiveRunner"]

BLOCK_S = 300.0
_MAX_NAP_S = 0.5


@dataclass
class LiveRunner:
    """Streams live readings to a sink until ``stop()`` returns True or ``end`` is reached."""

    registry: Registry
    opts: FeedOptions
    sink: Sink
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    stop: Callable[[], bool] = lambda: False
    on_message: Callable[[int], None] | None = None
    summary: Summary = field(default_factory=Summary)
    _watermarks: dict[str, float] = field(default_factory=dict)
    _hours: dict[tuple[str, int], Batch] = field(default_factory=dict)

    def _traffic(self, sid: str, a: float, b: float) -> Batch:
        hour = int(a // 3600)
        if (sid, hour) not in self._hours:
            self._hours = {k: v for k, v in self._hours.items() if k[1] >= hour}
            self._hours[(sid, hour)] = simulate_traffic(
                self.registry.traffic[sid], hour * 3600.0, hour * 3600.0 + 3600.0,
                self.opts.seed, self.opts.rate_scale)
        return self._hours[(sid, hour)].window(a, b)

    def _batches(self, a: float, b: float) -> list[Batch]:
        traffic, air = select_sites(self.registry, self.opts.sites)
        out = []
        for sid in traffic:  # a block never spans an hour boundary, see run()
            out.append(self._traffic(sid, a, b))
        for sid in air:
            mon = self.registry.air[sid]
            nearby = [self.registry.traffic[t] for t in mon.nearby_traffic
                      if t in self.registry.traffic]
            out.append(simulate_air(mon, nearby, a, b, self.opts.seed, self.opts.interval_s,
                                    self.opts.rate_scale, self.opts.episode_scale))
        return out

    def _account(self, site: SiteMessages, sent: int, beats: int) -> None:
        part = site.head(sent)
        exp: Expectation = expect_site(
            part.batch, part.plan, part.deliver, lateness_s=self.opts.lateness_s,
            max_skew_s=self.opts.max_skew_s,
            watermark=self._watermarks.get(site.batch.site_id, -math.inf),
            beats=(site.beats.ts[:beats], site.beat_rows(beats)))
        self._watermarks[site.batch.site_id] = exp.watermark
        self.summary.messages += sent + beats
        self.summary.faults += part.fault_counts()
        self.summary.readings += exp.readings
        self.summary.heartbeats += exp.heartbeats
        self.summary.expected_deadletter += exp.deadletter or Counter()

    def _block(self, a: float, b: float, all_ids: list[str]) -> bool:
        """Send one block's messages on time; return False once stopped."""
        sites: list[SiteMessages] = []
        for batch in self._batches(a, b):
            sites.append(plan_site(batch, self.opts, int(a // BLOCK_S), all_ids, (a, b),
                                   skew_anchor=None, live=True))
        sent = [0] * len(sites)
        beats = [0] * len(sites)
        running = True
        for due, s, m, line in merge(sites):
            while running and (wait := due - self.clock()) > 0:
                running = not self.stop()
                if running:
                    self.sleep(min(wait, _MAX_NAP_S))
            if not running or self.stop():
                running = False
                break
            self.sink.send(*message_from_line(orjson.loads(line)))
            if m >= 0:
                sent[s] += 1
            else:
                beats[s] += 1
            if self.on_message:
                self.on_message(1)
        for site, k, h in zip(sites, sent, beats, strict=True):
            self._account(site, k, h)
        return running

    def run(self, duration_s: float | None = None) -> Summary:
        """Stream from now for ``duration_s`` seconds (None: until stopped)."""
        start = round(self.clock(), 3)
        end = start + duration_s if duration_s is not None else math.inf
        all_ids = sorted([*self.registry.traffic, *self.registry.air])
        a = start
        while a < end:
            b = min((math.floor(a / BLOCK_S) + 1) * BLOCK_S, end)
            if not self._block(a, b, all_ids):
                break
            a = b
        self.summary.extra = {"seed": self.opts.seed, "start": format_instant(start),
                              "duration_s": round(self.clock() - start, 3)}
        return self.summary
