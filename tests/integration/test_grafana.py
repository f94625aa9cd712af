"""Every PromQL query of the Grafana dashboards, run on the real VictoriaMetrics after a
known feed through a real worker (deploy/grafana/, docs/grafana.md).

The worker writes the aggregates and alerts of a small feed to the store; three scrapes
of its ``/metrics`` are pushed to the store as Prometheus would scrape them. Then each
query of each panel of the Prometheus-source dashboards is sent to ``/api/v1/query``
with the template variables and Grafana's interval variables replaced by values, and
its answer is compared with what the feed must give: the series' labels, and the exact
values where the contract defines them. The Flux dashboards cannot be run here (no
InfluxDB 2); tests/unit/test_grafana.py checks their shape.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thurrock_streams.stack import StackConfig

from .harness import ROOT, consume_all, poll, send

pytestmark = pytest.mark.integration

DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
H0 = 1_699_995_600  # 2023-11-14T21:00:00Z, an hour start, far from now
Result = dict[tuple[tuple[str, str], ...], float]


def hm(*v: float) -> float:
    return len(v) / sum(1 / x for x in v)


def query(stack: StackConfig, expr: str, at: float) -> Result:
    data = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"}).encode()
    with urllib.request.urlopen(f"{stack.store_url}/api/v1/query", data=data,
                                timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", (expr, body)
    return {tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")):
            float(s["value"][1]) for s in body["data"]["result"]}


def label_values(stack: StackConfig, expr: str) -> set[str]:
    """A ``label_values(metric, label)`` variable query, as Grafana runs it."""
    m = re.fullmatch(r"label_values\((\w+), (\w+)\)", expr)
    assert m, expr
    data = urllib.parse.urlencode({"match[]": m[1], "start": "0"}).encode()
    with urllib.request.urlopen(f"{stack.store_url}/api/v1/label/{m[2]}/values", data=data,
                                timeout=10) as r:
        return set(json.loads(r.read())["data"])


def substitute(expr: str, values: dict[str, str]) -> str:
    out = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m[1]], expr)
    assert "$" not in out, out
    return out


def push_scrape(stack: StackConfig, port: int, instance: str) -> None:
    """One scrape of a worker's /metrics into the store, labelled as Prometheus would."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read()
    q = urllib.parse.urlencode([("extra_label", f"instance={instance}"),
                                ("extra_label", "job=thurrock-streams")])
    req = urllib.request.Request(f"{stack.store_url}/api/v1/import/prometheus?{q}",
                                 data=text, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def L(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def close(got: Result, want: Result) -> None:
    assert set(got) == set(want), (got, want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), (k, got[k], v)


def test_every_prometheus_query_of_the_dashboards_returns_the_feeds_series(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    road, jam, aqa, aqb, bad = (f"{prefix}{n}" for n in ("R", "S", "A", "B", "bad"))
    instance = f"{prefix}worker"
    # Road R: 6 minutes at 40 km/h (index 0.6: raised), then 6 at 90 (0.1: cleared).
    # Road S: 15 minutes at 18, 20, 22 km/h (index 1 - hm/100 ≈ 0.80: raised, stays open).
    # Three vehicles a minute; free-flow speed 100 km/h (sites not in the registry).
    traffic: list[tuple[bytes | None, Any]] = []
    for minute in range(15):
        for k in range(3):
            ts = H0 + 60 * minute + 10 + 15 * k
            if minute < 12:
                traffic.append((road.encode(), {"site_id": road, "ts": ts, "lane": 1 + k,
                                                "speed_kph": 40.0 if minute < 6 else 90.0}))
            traffic.append((jam.encode(), {"site_id": jam, "ts": ts, "lane": 1 + k,
                                           "speed_kph": 18.0 + 2 * k}))
    traffic += [(None, b"{not json"), (None, b"\xff"),
                (bad.encode(), {"site_id": bad, "ts": H0, "speed_kph": 50}),       # schema
                (bad.encode(), {"site_id": bad, "ts": H0, "lane": 1, "speed_kph": 300})]
    # a vehicle at H0 + 931 s closes every window up to the 15-minute one (the heartbeats
    # of CONTRACT.md §3 are not in the worker yet)
    traffic += [(s.encode(), {"site_id": s, "ts": H0 + 931, "lane": 1, "speed_kph": 95.0})
                for s in (road, jam)]
    # Monitors A, B: one hour of NO2, a sample a minute, means 250 and 100 µg/m³
    # (DAQI 4 Moderate: raised; DAQI 2 Low).
    air: list[tuple[bytes | None, Any]] = []
    for site, level in ((aqa, 250.0), (aqb, 100.0)):
        air += [(site.encode(), {"site_id": site, "ts": H0 + 60 * m + 30,
                                 "no2_ugm3": level + (1.0 if m % 2 else -1.0)})
                for m in range(60)]
        air.append((site.encode(), {"site_id": site, "ts": H0 + 3631, "no2_ugm3": level}))
    air.append((bad.encode(), {"site_id": bad, "ts": H0, "no2_ugm3": -5.0}))  # range

    worker = make_worker(IDLE_FLUSH_S="4")
    push_scrape(stack, worker.web_port, instance)
    send(stack, f"{prefix}traffic.readings", traffic)
    send(stack, f"{prefix}air.readings", air)
    traffic_n, air_n = len(traffic), len(air)

    c = poll(worker.counters, lambda x: x["pipelines"]["traffic"]["readings_in"] == traffic_n
             and x["pipelines"]["air"]["readings_in"] == air_n
             and x["sink"]["pending_points"] == 0
             and x["alerts"]["events"].get("raised", 0) >= 3
             and x["alerts"]["events"].get("cleared", 0) >= 1, 60, "the feed counted")
    n_events = sum(c["alerts"]["events"].values())
    events = [json.loads(r.value) for r in sorted(
        consume_all(stack, f"{prefix}alerts", n_events, 30),
        key=lambda r: (r.partition, r.offset))]
    assert len(events) == n_events
    # docs/alerts.md: raised after 5 minutes >= 0.5 (high when already >= 0.75), cleared
    # after 5 below 0.3; DAQI 4 raises daqi:no2
    assert sorted((e["site_id"], e["rule"], e["state"], e["severity"], e["value"], e["ts"])
                  for e in events) == sorted([
        (road, "congestion", "raised", "moderate", 0.6, H0 + 300),
        (road, "congestion", "cleared", "low", 0.1, H0 + 660),
        (jam, "congestion", "raised", "high", round(1 - hm(18, 20, 22) / 100, 4), H0 + 300),
        (aqa, "daqi:no2", "raised", "moderate", 4, H0 + 3600)])
    poll(worker.counters, lambda x: x["alerts"]["notifiers"]["log"]["sent"] == n_events,
         30, "the log notifier to have sent every event")

    def stored() -> tuple[int, int, int]:
        urllib.request.urlopen(f"{stack.store_url}/internal/force_flush", timeout=10).read()
        return (len(query(stack, f'traffic_count{{site_id=~"{prefix}.*",window="15m"}}',
                          H0 + 900)),
                len(query(stack, f'daqi_index{{site_id=~"{prefix}.*"}}', H0 + 3600)),
                int(sum(query(stack, f'count(count_over_time(alerts_value'
                                     f'{{site_id=~"{prefix}.*"}}[3h]))', H0 + 4000).values())))

    poll(stored, lambda s: s == (2, 2, n_events), 30, "the feed's aggregates in the store")
    push_scrape(stack, worker.web_port, instance)
    time.sleep(1.1)  # a second sample a second later, for rate()
    push_scrape(stack, worker.web_port, instance)

    def scraped() -> Result:
        urllib.request.urlopen(f"{stack.store_url}/internal/force_flush", timeout=10).read()
        return query(stack, f'count_over_time(thurrock_deadlettered_total'
                            f'{{instance="{instance}"}}[1m])', time.time())

    # series new in a scrape are searchable a moment after it
    poll(scraped, lambda r: len(r) == 4 and set(r.values()) == {2.0}, 30,
         "the scrapes in the store")
    now = time.time()

    sites_t = f"({road}|{jam})"
    sites_a = f"({aqa}|{aqb})"
    all_p = "(no2|o3|so2|pm25|pm10|co)"
    cong = {road: 0.6, jam: 1 - hm(18, 20, 22) / 100}
    # open alerts: the time of the latest event of each alert not cleared
    latest = {}
    for e in events:
        latest[(e["site_id"], e["rule"])] = e
    open_alerts = {L(site_id=s, rule=r): float(e["ts"]) for (s, r), e in latest.items()
                   if e["state"] != "cleared"}
    by_kind: dict[tuple[tuple[str, str], ...], float] = {}
    by_state: dict[tuple[tuple[str, str], ...], float] = {}
    for e in events:
        kind = L(site_id=e["site_id"], rule=e["rule"], state=e["state"],
                 severity=e["severity"])
        by_kind[kind] = by_kind.get(kind, 0) + 1
        by_state[L(state=e["state"])] = by_state.get(L(state=e["state"]), 0) + 1

    m1 = {road: 40.0, jam: 20.0}

    def per_site(f: Callable[[str], float]) -> Result:
        return {L(site_id=s, window="1m"): f(s) for s in (road, jam)}

    def no2(a: float, b: float) -> Result:
        return {L(site_id=aqa, pollutant="no2", period="1h"): a,
                L(site_id=aqb, pollutant="no2", period="1h"): b}

    dl = {L(pipeline="traffic", reason="decode"): 2.0, L(pipeline="traffic", reason="schema"): 1,
          L(pipeline="traffic", reason="range"): 1, L(pipeline="air", reason="range"): 1}

    def labels_only(want: set[tuple[tuple[str, str], ...]]) -> Callable[[Result], None]:
        def check(got: Result) -> None:
            assert set(got) == want, got
        return check

    def exact(want: Result) -> Callable[[Result], None]:
        return lambda got: close(got, want)

    def positive(want: set[tuple[tuple[str, str], ...]]) -> Callable[[Result], None]:
        def check(got: Result) -> None:
            assert set(got) == want and all(v > 0 for v in got.values()), got
        return check

    lanes = {L(lane=a) for a in ("traffic", "air", "alerts", "alert-notify", "sink")}
    missed = exact({label: 0.0 for label in lanes})
    notifier = {"sent": float(n_events), "failed_attempts": 0.0, "gave_up": 0.0,
                "dropped": 0.0, "queued": 0.0}

    pipes = {L(pipeline="traffic"), L(pipeline="air")}
    # dashboard -> (evaluation time, variables, {(panel title, refId): check})
    plan: dict[str, tuple[float, dict[str, str], dict[tuple[str, str], Callable[..., None]]]] = {
        "traffic-overview.json": (H0 + 60, {"site_id": sites_t, "window": "1m",
                                            "__range": "60s"}, {
            ("Congestion index now, per site", "A"): exact(per_site(cong.__getitem__)),
            ("Congestion index", "A"): exact(per_site(cong.__getitem__)),
            ("Flow (veh/h)", "A"): exact(per_site(lambda s: 180.0)),
            ("Vehicles per window", "A"): exact(per_site(lambda s: 3.0)),
            ("Time-mean speed (km/h)", "A"): exact(per_site(m1.__getitem__)),
            ("Space-mean speed (km/h)", "A"): exact(per_site(
                lambda s: 40.0 if s == road else hm(18, 20, 22))),
            ("V85 (km/h)", "A"): exact(per_site(lambda s: 40.0 if s == road else 21.4)),
            ("Density (veh/km)", "A"): exact(per_site(
                lambda s: 180 / (40.0 if s == road else hm(18, 20, 22)))),
            ("HGV share (%)", "A"): exact(per_site(lambda s: 0.0)),
        }),
        "air-quality.json": (H0 + 3600, {"site_id": sites_a, "pollutant": all_p,
                                         "period": "1h", "__range": "1h"}, {
            ("DAQI now, per monitor", "A"): exact({L(site_id=aqa): 4, L(site_id=aqb): 2}),
            ("DAQI index per monitor", "A"): exact({L(site_id=aqa): 4, L(site_id=aqb): 2}),
            ("Mean concentration ($period)", "A"): exact(no2(250.0, 100.0)),
            ("DAQI sub-index per pollutant ($period)", "A"): exact(no2(4, 2)),
            ("Data capture (%)", "A"): exact(no2(100.0, 100.0)),
            ("Validity ($period)", "A"): exact(no2(1, 1)),
        }),
        "alerts.json": (H0 + 4000, {"site_id": f"({road}|{jam}|{aqa}|{aqb})", "rule": ".*",
                                    "__range": "2h"}, {
            ("Open alerts", "A"): exact(open_alerts),
            ("Events in range", "A"): exact(by_kind),
            ("Events by state", "A"): exact(by_state),
        }),
        "pipeline-health.json": (now, {"instance": instance, "pipeline": ".*",
                                       "__range": "10m", "__rate_interval": "5m"}, {
            ("Readings in, accepted (per second)", "A"): positive(pipes),
            ("Readings in, accepted (per second)", "B"): positive(pipes),
            ("Dead letters by reason (per second)", "A"): labels_only(set(dl)),
            ("Dead letters by reason (since worker start)", "A"): exact(dl),
            ("Sink pending points", "A"): exact({(): 0.0}),
            ("Store outage (s)", "A"): exact({(): 0.0}),
            ("Points rejected by the store", "A"): exact({(): 0.0}),
            ("Sink writes and retries (per second)", "A"): positive({()}),
            ("Sink writes and retries (per second)", "B"): exact({(): 0.0}),
            ("Sink pending points per worker", "A"): exact({L(instance=instance,
                                                   job="thurrock-streams"): 0.0}),
            ("Windows closed (per second)", "A"): positive(pipes),
            ("Re-keyed and replay-skipped messages (per second)", "A"): labels_only(pipes),
            ("Re-keyed and replay-skipped messages (per second)", "B"): labels_only(pipes),
            **{("Batch lanes (since worker start)", r): labels_only(lanes) for r in "ABC"},
            ("Batch lanes (since worker start)", "D"): missed,
            ("Alert events and records (per second)", "A"): positive({()}),
            ("Alert events and records (per second)", "B"): labels_only(
                {L(state=s) for s in {e["state"] for e in events}}),
            **{("Notifiers (since worker start)", chr(65 + i)): exact({L(notifier="log"): v})
               for i, v in enumerate(notifier.values())},
        }),
    }
    # the Alert events series: at the time of an event, that event's value
    plan["alerts.json"][2][("Alert events", "A")] = exact({L(
        site_id=aqa, rule="daqi:no2", state="raised", severity="moderate"): 4.0})
    moved = {("alerts.json", ("Alert events", "A")): (H0 + 3600, {"site_id": aqa, "rule": ".*"})}
    checked = []
    for name, (at, values, checks) in plan.items():
        d = json.loads((DASHBOARDS / name).read_text())
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert label_values(stack, v["query"]), v["query"]
        for p in d["panels"]:
            for t in p.get("targets", []):
                key = (p["title"], t["refId"])
                assert key in checks, f"{name}: no expectation for {key}"
                at_q, values_q = moved.get((name, key), (at, values))
                expr = substitute(t["expr"], {**values_q, "__interval": "1m"})
                checks[key](query(stack, expr, at_q))
                checked.append((name, key))
        assert not set(checks) - {k for n, k in checked if n == name}, name

    # the variables list the feed's sites, rules, workers and pipelines
    assert {road, jam} <= label_values(stack, "label_values(traffic_flow_vph, site_id)")
    assert {aqa, aqb} <= label_values(stack, "label_values(air_quality_mean, site_id)")
    assert instance in label_values(stack,
                                    "label_values(thurrock_sink_pending_points, instance)")
    assert (c["pipelines"]["traffic"]["accepted"], c["pipelines"]["air"]["accepted"]) == (83, 122)
    assert len(checked) == sum(len(p[2]) for p in plan.values())


def test_plan_covers_a_dashboard_file_each() -> None:
    prom = sorted(p.name for p in Path(DASHBOARDS).glob("*.json")
                  if "-influxdb" not in p.name)
    assert prom == ["air-quality.json", "alerts.json", "pipeline-health.json",
                    "traffic-overview.json"]
