"""``thurrock-streams watch``: a live terminal view of what the processor writes.

Reads the aggregates topics (newest record per site), the alerts topic (open alerts and
the latest events) and the worker's counters page, and redraws every ``--interval``
seconds until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

from .errors import ThurrockError
from .settings import Settings
from .topics import AIR_AGGREGATES, ALERTS, TRAFFIC_AGGREGATES

__all__ = ["WorkerWatch", "consumer_config", "main", "render"]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _traffic_rows(latest: dict[str, dict[str, Any]]) -> list[str]:
    out = [f"{'traffic site':<28} {'1-min window end':<17} {'veh':>4} {'flow veh/h':>10} "
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
    return out


def _air_rows(daqi: dict[str, dict[str, Any]],
              means: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    out = [f"{'air monitor':<28} {'hour end (UTC)':<17} {'DAQI':>4} {'band':<9} {'set by':<6} "
           f"{'NO2 1h':>7} {'PM2.5 24h':>9} {'PM10 24h':>8} {'O3 8h':>6}  (µg/m³)"]
    sites = sorted({s for s, _ in means} | set(daqi))
    for site in sites:
        d = daqi.get(site, {})
        end = (datetime.fromtimestamp(d["ts"], UTC).strftime("%m-%d %H:%M") if d else "-")

        def m(key: tuple[str, str], site: str = site) -> str:
            return _fmt(means.get((site, key[0] + "/" + key[1]), {}).get("mean"), ".1f")

        out.append(f"{site[:28]:<28} {end:<17} {d.get('index', '-'):>4} {d.get('band', '-'):<9} "
                   f"{d.get('pollutant', '-'):<6} {m(('no2', '1h')):>7} {m(('pm25', '24h')):>9} "
                   f"{m(('pm10', '24h')):>8} {m(('o3', '8h')):>6}")
    if not sites:
        out.append("(waiting for the first air windows: 15 minutes of event time)")
    return out


def _alert_rows(open_alerts: dict[tuple[str, str], dict[str, Any]],
                recent: list[dict[str, Any]]) -> list[str]:
    out = [f"alerts: {len(open_alerts)} open; latest events (event time, UTC):"]
    for e in recent[-8:]:
        when = datetime.fromtimestamp(e["ts"], UTC).strftime("%m-%d %H:%M")
        out.append(f"  {when}  {e['state']:<9} {e['severity']:<9} {e['rule']:<24} "
                   f"{e['message'][:90]}")
    if not recent:
        out.append("  (none yet)")
    return out


def note_alert(open_alerts: dict[tuple[str, str], dict[str, Any]],
               recent: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """Follow one alert event: open on raised/escalated, closed on cleared."""
    key = (event["site_id"], event["rule"])
    if event["state"] == "cleared":
        open_alerts.pop(key, None)
    else:
        open_alerts[key] = event
    recent.append(event)
    del recent[:-50]


class WorkerWatch:
    """Whether the worker whose counters the view reads answers, and since when not."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered_at: float | None = None
        self.silent_since: float | None = None

    def answered(self, now: float) -> None:
        """The counters page answered at ``now``."""
        self.answered_at = now
        self.silent_since = None

    def silent(self, now: float) -> None:
        """The counters page did not answer at ``now``."""
        if self.silent_since is None:
            self.silent_since = now

    def line(self, now: float) -> str | None:
        """The view's word on the worker, or None while it answers."""
        if self.silent_since is None:
            return None
        if self.answered_at is None:
            return (f"worker: no answer from {self.url} yet for "
                    f"{now - self.silent_since:.0f} s (starting? or not running)")
        last = datetime.fromtimestamp(self.answered_at, UTC)
        return (f"worker: GONE - {self.url} has not answered for "
                f"{now - self.silent_since:.0f} s (last answer {last:%H:%M:%S} UTC); "
                "nothing new is processed until a worker runs again")


def render(latest: dict[str, dict[str, Any]], daqi: dict[str, dict[str, Any]],
           means: dict[tuple[str, str], dict[str, Any]], counters: dict[str, Any] | None,
           open_alerts: dict[tuple[str, str], dict[str, Any]] | None = None,
           recent: list[dict[str, Any]] | None = None, worker: str | None = None) -> str:
    """The screen: a word on the worker when it is gone, traffic per site (newest
    1-minute window), air per monitor, alerts, counters."""
    out = [f"Thurrock Streams — live, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC", ""]
    if worker:
        out[1:1] = [worker]
    out += [*_traffic_rows(latest), "", *_air_rows(daqi, means), "",
            *_alert_rows(open_alerts or {}, recent or [])]
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
        lanes = counters.get("lanes", {})
        missed = sum(c.get("missed", 0) for c in lanes.values())
        if missed:
            out.append(f"lanes: offsets gone by retention before they were processed: "
                       f"{missed} (see the worker log)")
    return "\n".join(out)


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The live view's kafka-python consumer options: no group, from the earliest offset,
    with the Kafka security of the project's one builder (adapters/kafka.py)."""
    from .adapters.kafka import kafka_python_options

    return {"bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
            "auto_offset_reset": "earliest", "enable_auto_commit": False,
            **kafka_python_options(settings)}


def main(argv: list[str] | None = None) -> int:
    """Run the live view."""
    parser = argparse.ArgumentParser(prog="thurrock-streams watch",
                                     description="Live view of traffic aggregates and counters.")
    parser.add_argument("--web-port", type=int, default=6066, help="the worker's web port")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    args = parser.parse_args(argv)
    from kafka import KafkaConsumer

    try:
        settings = Settings.from_env()
        config = consumer_config(settings)
    except ThurrockError as exc:  # a bad setting, e.g. SASL without a password
        print(f"thurrock-streams watch: {exc}", file=sys.stderr)
        return 2
    consumer = KafkaConsumer(settings.topic(TRAFFIC_AGGREGATES), settings.topic(AIR_AGGREGATES),
                             settings.topic(ALERTS), **config)
    latest: dict[str, dict[str, Any]] = {}
    daqi: dict[str, dict[str, Any]] = {}
    means: dict[tuple[str, str], dict[str, Any]] = {}
    open_alerts: dict[tuple[str, str], dict[str, Any]] = {}
    recent: list[dict[str, Any]] = []
    alerts_topic = settings.topic(ALERTS)
    url = f"http://127.0.0.1:{args.web_port}/counters"
    worker = WorkerWatch(url)
    try:
        while True:
            end = time.monotonic() + args.interval
            while time.monotonic() < end:
                for recs in consumer.poll(timeout_ms=200).values():
                    for r in recs:
                        rec = json.loads(r.value)
                        kind = rec.get("measurement")
                        if r.topic == alerts_topic:
                            note_alert(open_alerts, recent, rec)
                        elif rec.get("window") == "1m":
                            latest[rec["site_id"]] = rec
                        elif kind == "daqi":
                            daqi[rec["site_id"]] = rec
                        elif kind == "air_quality":
                            means[(rec["site_id"], f"{rec['pollutant']}/{rec['period']}")] = rec
            counters = None
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    counters = json.loads(resp.read())
                worker.answered(time.time())
            except (OSError, ValueError):
                worker.silent(time.time())
            screen = render(latest, daqi, means, counters, open_alerts, recent,
                            worker.line(time.time()))
            sys.stdout.write("\x1b[2J\x1b[H" + screen + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
