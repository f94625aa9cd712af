"""In-process throughput of the engine, no broker: run by ``bench/run`` in a subprocess.

Times, on the same synthetic feeds the broker runs use:

- ``kernel``: the traffic kernel alone (``traffic_windows``) over 1-minute windows;
- ``decode``: ``readings.decode_batch`` (parse + validate) on frames and on single readings;
- ``step``: ``Processor.step`` as the agent drives it (decode, route, per-site windows,
  kernels, aggregate records) plus encoding every changed site state, as ``_deliver`` does;
- ``sink``: turning aggregate records into JSON and line protocol, as the sink does.

Prints one JSON object. ``PYTHONPATH`` decides which ``thurrock_streams`` is measured, so
the same script also measures an older tree (``bench/run --before REV``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feeds

from thurrock_streams.adapters.influx import to_line
from thurrock_streams.air import AirPipeline
from thurrock_streams.engine.processor import Processor, SiteState
from thurrock_streams.kernels.traffic import traffic_windows
from thurrock_streams.readings import RawMessage, decode_batch
from thurrock_streams.traffic import TrafficPipeline


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Fastest wall time of ``repeat`` calls (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def raw(msgs: list[feeds.Msg], topic: str) -> list[RawMessage]:
    return [RawMessage(topic, 0, i, k, v) for i, (k, v) in enumerate(msgs)]


def state_writer() -> Callable[[str, SiteState], Any]:
    """Encode a changed state as the readings agent stores it: a base or delta record
    against the site's last one (``engine/chain.py``); in a tree from before those (an
    older tree run with ``--code-rev``), the site's whole state (``SiteState.encode``)."""
    try:
        from thurrock_streams.engine import chain
    except ImportError:
        return lambda site, st: st.encode()
    chains: dict[str, Any] = {}

    def write(site: str, st: SiteState) -> None:
        _, _, chains[site] = chain.write(site.encode(), st, chains.get(site))

    return write


def run_steps(pipeline: Any, msgs: list[RawMessage], batch: int) -> tuple[int, list[Any]]:
    """Drive the processor like the agent: batches, states carried, changed states encoded."""
    proc = Processor(pipeline)
    states: dict[str, SiteState] = {}
    aggs: list[Any] = []
    now = feeds.T0 + 10**6
    write = state_writer()
    for i in range(0, len(msgs), batch):
        out = proc.step(msgs[i:i + batch], states, now)
        for site, st in out.changed.items():
            write(site, st)
            states[site] = st
        aggs += out.aggregates
    return proc.counters.readings_in, aggs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--frames", type=int, default=1000, help="traffic frames of 1,000 readings")
    p.add_argument("--singles", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    res: dict[str, Any] = {}

    # kernel only: 1M vehicles over 1,000 one-minute windows
    rng = np.random.default_rng(1)
    n = 1_000_000
    win = np.sort(rng.integers(0, 1000, n))
    speed = rng.normal(85, 15, n).clip(1, 160)
    cls = rng.integers(0, 6, n).astype(np.int8)
    t = best_of(lambda: traffic_windows(win, speed, cls, 1000, 60, 100.0), a.repeat)
    res["kernel_rps"] = n / t

    sites = feeds.site_ids("inproc", a.sites)
    per_site = max(1, a.frames // a.sites)
    framed = raw(list(feeds.traffic_frames(sites, per_site, 1000, seed=2)), "traffic.readings")
    singles = raw(list(feeds.traffic_singles(sites, max(1, a.singles // a.sites), seed=3)),
                  "traffic.readings")
    n_framed = len(framed) * 1000
    chunk = framed[:100]
    res["decode_framed_rps"] = 100_000 / best_of(lambda: decode_batch("traffic", chunk), a.repeat)
    res["decode_single_rps"] = len(singles[:10_000]) / best_of(
        lambda: decode_batch("traffic", singles[:10_000]), a.repeat)

    traffic = TrafficPipeline.create(30.0, 300.0)
    t = time.perf_counter()
    n_in, aggs = run_steps(traffic, framed, 100)
    res["step_framed_rps"] = n_in / (time.perf_counter() - t)
    res["framed_readings"] = n_framed
    res["framed_aggregates"] = len(aggs)
    t = time.perf_counter()
    n_in, aggs1 = run_steps(traffic, singles, 10_000)
    res["step_single_rps"] = n_in / (time.perf_counter() - t)
    res["single_readings"] = len(singles)

    air_sites = feeds.site_ids("inproc-air", max(1, a.sites // 10))
    air = raw(list(feeds.air_frames(air_sites, 1, 1000, seed=4)), "air.readings")
    t = time.perf_counter()
    n_in, air_aggs = run_steps(AirPipeline.create(30.0, 300.0), air, 100)
    res["step_air_framed_rps"] = n_in / (time.perf_counter() - t)

    recs = [r for _, r in aggs[:20_000]]
    t = best_of(lambda: [to_line("traffic", orjson.loads(orjson.dumps(r))) for r in recs], 1)
    res["sink_records_per_s"] = len(recs) / t
    res["aggregates_per_1k_readings"] = {
        "traffic_framed": 1000 * len(aggs) / n_framed,
        "traffic_single": 1000 * len(aggs1) / len(singles),
        "air_framed": 1000 * len(air_aggs) / (len(air) * 1000),
    }
    print(orjson.dumps(res).decode())


if __name__ == "__main__":
    main()
