"""``thurrock-streams watch``: a live terminal view of what the processor writes.

Reads the aggregates topics (newest record per site) and the worker's counters page,
and redraws a table every ``--interval`` seconds until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

from .settings import Settings
from .topics import TRAFFIC_AGGREGATES

__all__ = ["main"]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(latest: dict[str, dict[str, Any]], counters: dict[str, Any] | None) -> str:
    """The screen: one row per traffic site (its newest 1-minute window), then counters."""
    out = [f"Thurrock Streams — live congestion, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
           "", f"{'site':<28} {'window end (UTC)':<17} {'veh':>4} {'flow veh/h':>10} "
           f"{'mean km/h':>9} {'V85 km/h':>8} {'HGV %':>6} {'congestion':>10}"]
    for site in sorted(latest):
        r = latest[site]
        end = datetime.fromtimestamp(r["ts"], UTC).strftime("%m-%d %H:%M")
        out.append(f"{site[:28]:<28} {end:<17} {r['count']:>4} {_fmt(r.get('flow_vph'), '.0f'):>10}"
                   f" {_fmt(r.get('mean_speed_kph'), '.1f'):>9} "
                   f"{_fmt(r.get('p85_speed_kph'), '.1f'):>8} {_fmt(r.get('hgv_pct'), '.1f'):>6}"
                   f" {_fmt(r.get('congestion_index'), '.2f'):>10}")
    if not latest:
        out.append("(waiting for the first windows to close: about a minute after readings start)")
    if counters:
        out.append("")
        for kind, c in counters.get("pipelines", {}).items():
            out.append(f"{kind}: readings in {c['readings_in']}, accepted {c['accepted']}, "
                       f"dead-lettered {sum(c['deadlettered'].values())} "
                       f"{c['deadlettered'] or ''}")
        s = counters.get("sink", {})
        out.append(f"store: points written {s.get('written_points')}, pending "
                   f"{s.get('pending_points')}, retries {s.get('retries')}"
                   + (f", last error: {s['last_error']}" if s.get("last_error") else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the live view."""
    parser = argparse.ArgumentParser(prog="thurrock-streams watch",
                                     description="Live view of traffic aggregates and counters.")
    parser.add_argument("--web-port", type=int, default=6066, help="the worker's web port")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    args = parser.parse_args(argv)
    from kafka import KafkaConsumer

    settings = Settings.from_env()
    consumer = KafkaConsumer(settings.topic(TRAFFIC_AGGREGATES),
                             bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                             auto_offset_reset="earliest", enable_auto_commit=False)
    latest: dict[str, dict[str, Any]] = {}
    try:
        while True:
            end = time.monotonic() + args.interval
            while time.monotonic() < end:
                for recs in consumer.poll(timeout_ms=200).values():
                    for r in recs:
                        rec = json.loads(r.value)
                        if rec.get("window") == "1m":
                            latest[rec["site_id"]] = rec
            counters = None
            try:
                url = f"http://127.0.0.1:{args.web_port}/counters"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    counters = json.loads(resp.read())
            except OSError:
                pass
            sys.stdout.write("\x1b[2J\x1b[H" + render(latest, counters) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
