"""The engine's step, one site at a time against sites together, in one run (no broker).

Drives ``Processor.step`` as the agent does (batches, states carried) with
``across=False`` (the per-site path) and ``across=True`` (sites stepped together,
``engine/across.py``) over the same feeds, alternating the two so that both see the same
machine load, and prints one JSON object: for each feed and path the best of
``--repeat`` runs of

- ``step``: ``Processor.step`` alone (decode, route, windows, aggregates, new states);
- ``step_encode``: the same plus encoding every changed state, as ``_deliver`` does
  (``inproc.state_writer``);

as readings/s and site-steps/s (a site-step: one site touched by one step), and the
ratio of the two paths. Feeds: ``singles`` (``--sites`` sites × ``--per-site`` single
readings, one reading per message, ``--batch`` messages per step), ``framed``
(``--frame-sites`` sites × one frame of 1,000 readings, 100 frames per step) and, with
``--beat-every N``, ``singles_beats`` (the singles with every N-th round heartbeats).

Run: ``.venv/bin/python bench/across.py`` (about a minute on the 2-core box). An older
tree's per-site path, beside this one: ``PYTHONPATH=../main .venv/bin/python
bench/across.py --paths per-site`` (docs/performance.md, "Sites stepped together").
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feeds
from inproc import state_writer

from thurrock_streams.engine.processor import Processor, SiteState
from thurrock_streams.readings import RawMessage
from thurrock_streams.traffic import TrafficPipeline


def raw(msgs: list[feeds.Msg], topic: str) -> list[RawMessage]:
    return [RawMessage(topic, 0, i, k, v) for i, (k, v) in enumerate(msgs)]


def run(msgs: list[RawMessage], batch: int, across: bool, encode: bool) -> tuple[float, int,
                                                                               int, bytes]:
    """One pass: (seconds, readings in, site-steps, a digest of every output)."""
    pipe = TrafficPipeline.create(30.0, 300.0)
    if "across" in inspect.signature(Processor).parameters:
        proc = Processor(pipe, across=across)
    elif across:
        raise SystemExit("this tree's Processor has no across path")
    else:  # an older tree (PYTHONPATH): its only path is one site at a time
        proc = Processor(pipe)
    states: dict[str, SiteState] = {}
    now = feeds.T0 + 10**6
    site_steps = 0
    outs: list[Any] = []
    write = state_writer()
    t = time.perf_counter()
    for i in range(0, len(msgs), batch):
        out = proc.step(msgs[i:i + batch], states, now)
        site_steps += len(out.changed)
        if encode:
            for site, st in out.changed.items():
                write(site, st)
        states.update(out.changed)
        outs.append(out.aggregates)
    took = time.perf_counter() - t
    return took, proc.counters.readings_in, site_steps, orjson.dumps(outs)


def beats(singles: list[RawMessage], n_sites: int, every: int) -> list[RawMessage]:
    """``singles`` (rounds of one reading per site) with every ``every``-th round's
    readings replaced by heartbeats at the same time."""
    out = []
    for i, m in enumerate(singles):
        if (i // n_sites) % every == every - 1:
            r = orjson.loads(m.value or b"{}")
            m = RawMessage(m.topic, m.partition, m.offset, m.key, orjson.dumps(
                {"site_id": r["site_id"], "ts": r["ts"], "heartbeat": True}))
        out.append(m)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sites", type=int, default=10_000)
    p.add_argument("--per-site", type=int, default=5)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--frame-sites", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--beat-every", type=int, default=0,
                   help="also a feed of single readings where every N-th message of a site "
                        "is a heartbeat instead (as sensors-sim run sends them)")
    p.add_argument("--paths", choices=["both", "per-site", "across"], default="both",
                   help="one path only: to measure an older tree (PYTHONPATH) beside this one")
    a = p.parse_args()
    paths = {"both": (False, True), "per-site": (False,), "across": (True,)}[a.paths]
    sites = feeds.site_ids("across", a.sites)
    singles = raw(list(feeds.traffic_singles(sites, a.per_site, seed=3)), "traffic.readings")
    framed = raw(list(feeds.traffic_frames(feeds.site_ids("across-f", a.frame_sites), 1,
                                           1000, seed=2)), "traffic.readings")
    res: dict[str, Any] = {}
    todo = [("singles", singles, a.batch), ("framed", framed, 100)]
    if a.beat_every:
        todo.append(("singles_beats", beats(singles, a.sites, a.beat_every), a.batch))
    for feed, msgs, batch in todo:
        for encode in (False, True):
            best = {False: float("inf"), True: float("inf")}
            digest: dict[bool, bytes] = {}
            n_in = steps = 0
            for _ in range(a.repeat):
                for across in paths:  # alternated: both see the same load
                    took, n_in, steps, digest[across] = run(msgs, batch, across, encode)
                    best[across] = min(best[across], took)
            if len(set(digest.values())) != 1:
                raise SystemExit(f"{feed}: the two paths' aggregates differ")
            name = f"{feed}_{'step_encode' if encode else 'step'}"
            for across in paths:
                label = "across" if across else "per_site"
                res[f"{name}_{label}_rps"] = round(n_in / best[across])
                res[f"{name}_{label}_site_steps_per_s"] = round(steps / best[across])
            if len(paths) == 2:
                res[f"{name}_ratio"] = round(best[False] / best[True], 2)
        res[f"{feed}_readings"] = n_in
        res[f"{feed}_site_steps"] = steps
    print(orjson.dumps(res).decode())


if __name__ == "__main__":
    main()
