"""The sink's and the alert agent's cost per aggregate, an older tree against this one.

``.venv/bin/python bench/sink_ab.py --before REV`` (docs/performance.md, "Sink and alerts
per aggregate"). No broker: both trees are imported into one process and timed in turn
(best of several rounds), so the machine's load, shared with other work, weighs on both
alike. On the aggregates of the ``bench/run`` feeds (traffic frames of 1,000 sites, and
single readings of 10,000 sites × 5) it times:

- ``sink``: the sink's batch path up to the HTTP write: the topic's JSON bytes to
  line protocol, and the window-close stamp read from the header;
- ``alerts``: the alert agent's steps of 5,000 aggregates (decode, rules, the state
  records to store), over a dict standing in for the ``alert-sites`` table.

The line protocol of the two trees is compared byte for byte. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feeds
from inproc import raw, run_steps

from bench import ROOT, before_tree

CLOSED_AT = "thurrock-closed-at"


def load(root: str) -> dict[str, Any]:
    """The modules of the ``thurrock_streams`` under ``root``, imported afresh."""
    for name in [m for m in sys.modules if m.split(".")[0] == "thurrock_streams"]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return {n: importlib.import_module(f"thurrock_streams.{n}") for n in
                ("adapters.influx", "agents.sink", "agents.alerts", "alerts.engine",
                 "alerts.rules", "settings", "traffic")}
    finally:
        sys.path.remove(root)


class Msg:
    """What the lane hands the sink: an aiokafka record's fields."""

    __slots__ = ("headers", "key", "offset", "partition", "topic", "value")

    def __init__(self, offset: int, key: bytes, value: bytes) -> None:
        self.topic, self.partition, self.offset = "traffic.aggregates", 0, offset
        self.key, self.value = key, value
        self.headers = ((CLOSED_AT, b"1700000000.5"),)


def sink_path(mods: dict[str, Any], msgs: list[Msg]) -> Callable[[], list[str]]:
    sink_cls = mods["agents.sink"].SinkAgent
    sink = object.__new__(sink_cls)
    sink.settings = mods["settings"].Settings()
    if hasattr(sink_cls, "convert"):
        sink.schemas = {"traffic.aggregates": "traffic", "alerts": "alerts",
                        "air.aggregates": None}
        return lambda: list(sink.convert(msgs)[0])
    to_line, schema_of = mods["adapters.influx"].to_line, mods["agents.sink"]._schema

    def before() -> list[str]:  # write_messages of b930188 up to the write, then the stamps
        lines, sources = [], []
        for m in msgs:
            rec = orjson.loads(m.value)
            lines.append(to_line(schema_of(m.topic, rec, sink.settings), rec))
            sources.append(m)
        latency: collections.deque[float] = collections.deque(maxlen=10_000)
        now = time.time()
        for m in sources:
            closed = dict(m.headers or []).get(CLOSED_AT)
            if closed:
                latency.append((now - float(closed)) * 1000.0)
        return lines

    return before


def alerts_path(mods: dict[str, Any], msgs: list[tuple[str, int, int, bytes]],
                size: int) -> Callable[[], int]:
    alerts, engine, rules = mods["agents.alerts"], mods["alerts.engine"], mods["alerts.rules"]

    def run() -> int:
        table: dict[bytes, bytes] = {}
        a = object.__new__(alerts.AlertAgent)
        a.engine = engine.AlertEngine(rules.load_rules())
        a.counters = alerts.AlertCounters()
        a.kind_of = {"traffic.aggregates": "traffic"}
        a.table = table
        a.newest, a.last_rx, a._index_stale = {}, {}, False
        a._assigned_at, a.quiet_s = 0.0, 65.0
        written = 0
        for i in range(0, len(msgs), size):
            _, changed = a.process(msgs[i:i + size])
            if hasattr(alerts, "changed_records"):
                records = alerts.changed_records(table.get, changed)
            else:
                records = {s.encode(): orjson.dumps(st.to_json()) for s, st in changed.items()}
            written += len(records)
            table.update(records)
        return written

    return run


def best(fn: Callable[[], Any], n: int) -> float:
    fastest = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t)
    return fastest


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--before", required=True, help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    tree = before_tree(a.before)
    if tree is None:
        raise SystemExit(f"cannot extract thurrock_streams at {a.before}")
    old, new = load(tree), load(str(ROOT))
    pipeline = new["traffic"].TrafficPipeline
    framed = raw(list(feeds.traffic_frames(feeds.site_ids("ab", 1000), 2, 1000, seed=2)),
                 "traffic.readings")
    singles = raw(list(feeds.traffic_singles(feeds.site_ids("abs", 10_000), 5, seed=3)),
                  "traffic.readings")
    res: dict[str, Any] = {"before": a.before}
    for name, msgs, batch in (("framed", framed, 100), ("single", singles, 10_000)):
        aggs = run_steps(pipeline.create(30.0, 300.0), msgs, batch)[1]
        sink_msgs = [Msg(i, k, orjson.dumps(r)) for i, (k, r) in enumerate(aggs)]
        tuples = [("traffic.aggregates", 0, i, orjson.dumps(r)) for i, (_, r) in enumerate(aggs)]
        figures: dict[str, Any] = {"aggregates": len(aggs)}
        paths: list[tuple[str, Callable[[dict[str, Any]], Callable[[], Any]]]] = [
            ("sink", lambda m, s=sink_msgs: sink_path(m, s)),  # type: ignore[misc]
            ("alerts", lambda m, t=tuples: alerts_path(m, t, 5000))]  # type: ignore[misc]
        for what, make in paths:
            fo, fn = make(old), make(new)
            ro, rn = fo(), fn()
            if what == "sink" and ro != rn:
                raise SystemExit(f"{name}: the two trees write different lines")
            if what == "alerts":
                figures["alert_records_before"], figures["alert_records_after"] = ro, rn
            to = tn = float("inf")
            for _ in range(a.rounds):  # in turn, so that both see the same load
                to, tn = min(to, best(fo, 3)), min(tn, best(fn, 3))
            figures[f"{what}_us_before"] = round(to / len(aggs) * 1e6, 2)
            figures[f"{what}_us_after"] = round(tn / len(aggs) * 1e6, 2)
            figures[f"{what}_ratio"] = round(to / tn, 2)
        res[name] = figures
    print(orjson.dumps(res).decode())


if __name__ == "__main__":
    main()
