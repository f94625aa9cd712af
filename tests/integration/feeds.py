"""Deterministic feeds and their expected aggregates, computed without the broker."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from thurrock_streams.engine.processor import Processor
from thurrock_streams.readings import RawMessage
from thurrock_streams.traffic import TrafficPipeline

#: 2023-11-14 21:00:00 UTC: a multiple of 900 s, far from "now" (no reading is future).
T0 = 1_699_995_600


def traffic_feed(sites: list[str], minutes: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Per-vehicle readings for ``sites`` over ``minutes``, a few out of order, some frames."""
    rng = np.random.default_rng(seed)
    per_site: list[list[tuple[bytes, bytes]]] = []
    for site in sites:
        n = minutes * 20
        ts = np.sort(T0 + rng.uniform(0, minutes * 60, n)).round(3)
        speed = rng.normal(80, 15, n).clip(0, 140).round(1)
        cls = rng.choice(["car", "lgv", "hgv"], n, p=[0.7, 0.15, 0.15])
        rows = [{"site_id": site, "ts": float(t), "lane": int(1 + i % 3), "speed_kph": float(s),
                 "class": str(c)} for i, (t, s, c) in enumerate(zip(ts, speed, cls, strict=True))]
        # swap neighbours now and then: out of order, well inside the allowed lateness
        for i in range(1, n - 1, 17):
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
        msgs: list[tuple[bytes, bytes]] = []
        i = 0
        while i < n:
            if i % 50 == 0:
                chunk = rows[i:i + 10]
                cols = {k: [r[k] for r in chunk] for k in chunk[0] if k != "site_id"}
                frame = {"site_id": site, "columns": cols}
                msgs.append((site.encode(), json.dumps(frame).encode()))
                i += len(chunk)
            else:
                msgs.append((site.encode(), json.dumps(rows[i]).encode()))
                i += 1
        per_site.append(msgs)
    # interleave the sites round-robin, keeping each site's own order
    out: list[tuple[bytes, bytes]] = []
    for k in range(max(len(m) for m in per_site)):
        out += [m[k] for m in per_site if k < len(m)]
    return out


def expected_aggregates(messages: list[tuple[bytes | None, bytes]],
                        pipeline: TrafficPipeline) -> dict[tuple[str, str, float], dict[str, Any]]:
    """What an uninterrupted run writes: the pure processor, then an idle flush."""
    proc = Processor(pipeline)
    raws = [RawMessage("traffic.readings", 0, i, k, v) for i, (k, v) in enumerate(messages)]
    out = proc.step(raws, {}, now=T0 + 10**6)
    recs = [a for _, a in out.aggregates]
    for site, state in out.changed.items():
        recs += [a for _, a in proc.run_on(site, state, math.inf).aggregates]
    return {(r["site_id"], r["window"], r["ts"]): r for r in recs}
