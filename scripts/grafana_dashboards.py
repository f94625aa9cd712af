#!/usr/bin/env python3
"""Build the Grafana dashboards of ``deploy/grafana/dashboards/`` from one definition.

Each dashboard of aggregates (traffic, air quality, alerts) is defined once here, with a
PromQL/MetricsQL query for the Prometheus-type data source (VictoriaMetrics: the local
stack's store, CONTRACT.md §4-§6 as VictoriaMetrics names line protocol) and a Flux query
for InfluxDB 2 (production). It is written twice: ``<name>.json`` (Prometheus source)
and ``<name>-influxdb.json`` (Flux). Pipeline health reads the workers' ``/metrics``,
which only a Prometheus-type source holds, so it has one file.

    .venv/bin/python scripts/grafana_dashboards.py          # rewrite the JSON files
    .venv/bin/python scripts/grafana_dashboards.py --check  # exit 1 if they are not current

The unit tests run ``--check``'s comparison, so a JSON file edited by hand (or exported
from Grafana's UI) without the change made here fails CI. docs/grafana.md explains why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deploy" / "grafana" / "dashboards"

#: Data source uids, as deploy/grafana/provisioning/datasources/thurrock.yaml names them.
PROM = {"type": "prometheus", "uid": "thurrock-prometheus"}
FLUX = {"type": "influxdb", "uid": "thurrock-influxdb"}
#: Grafana 11.6's dashboard schema version (grafana-foundation-sdk 11.6.0 writes 41).
SCHEMA_VERSION = 41

#: DAQI index 1-10 colours and band words (DOMAIN.md; UK-AIR's, via openair ukaq).
DAQI_COLOURS = ["#9CFF9C", "#31FF00", "#31CF00", "#FFFF00", "#FFCF00", "#FF9A00", "#FF6464",
                "#FF0000", "#990000", "#CE30FF"]
DAQI_BANDS = ["Low"] * 3 + ["Moderate"] * 3 + ["High"] * 3 + ["Very High"]
POLLUTANTS = ["no2", "o3", "so2", "pm25", "pm10", "co"]


@dataclass
class Q:
    """One query of a panel, in both languages (``None``: not in that dashboard set)."""

    promql: str | None
    flux: str | None
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class P:
    """A panel: Grafana type, title, size, queries and field settings."""

    kind: str
    title: str
    description: str
    queries: list[Q]
    w: int = 12
    h: int = 8
    unit: str = "short"
    decimals: int | None = None
    thresholds: list[tuple[float | None, str]] | None = None
    mappings: list[dict[str, Any]] | None = None
    min: float | None = None
    max: float | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    color_by_thresholds: bool = False


# ---------------------------------------------------------------------------- helpers

def flux(measurement: str, fields: Iterable[str], *filters: str, keep: Iterable[str] = (),
         tail: str = "") -> str:
    """A Flux query over the dashboard's time range; ``site_id`` filtered by the variable."""
    field_test = " or ".join(f'r._field == "{f}"' for f in fields)
    lines = [
        "from(bucket: v.defaultBucket)",
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f'  |> filter(fn: (r) => r._measurement == "{measurement}" and ({field_test}))',
        "  |> filter(fn: (r) => contains(value: r.site_id, set: ${site_id:json}))",
    ]
    lines += [f"  |> filter(fn: (r) => {f})" for f in filters]
    if keep:
        cols = ", ".join(f'"{c}"' for c in ["_time", "_value", "_field", *keep])
        lines.append(f"  |> keep(columns: [{cols}])")
    if tail:
        lines += [f"  {t}" for t in tail.splitlines()]
    return "\n".join(lines)


def steps(pairs: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in pairs]}


DAQI_STEPS: list[tuple[float | None, str]] = [
    (None if i == 0 else float(i + 1), c) for i, c in enumerate(DAQI_COLOURS)]
DAQI_MAPPINGS = [{"type": "value", "options": {
    str(i + 1): {"text": f"{i + 1} {DAQI_BANDS[i]}", "color": DAQI_COLOURS[i], "index": i}
    for i in range(10)}}]
#: docs/alerts.md `congestion`: raised at 0.5, escalated at 0.75, cleared below 0.3.
CONGESTION_STEPS: list[tuple[float | None, str]] = [
    (None, "green"), (0.3, "yellow"), (0.5, "orange"), (0.75, "red")]
#: A rate: readings, points or events per second.
PER_S = "suffix: /s"
OK_STEPS: list[tuple[float | None, str]] = [(None, "green"), (1.0, "red")]

TIMESERIES_CUSTOM = {"drawStyle": "line", "lineInterpolation": "stepBefore", "lineWidth": 1,
                     "fillOpacity": 0, "pointSize": 4, "showPoints": "auto",
                     "spanNulls": False}
LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
TOOLTIP = {"mode": "multi", "sort": "desc"}


def _options(p: P) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if p.kind == "timeseries":
        base: dict[str, Any] = {"legend": LEGEND, "tooltip": TOOLTIP}
    elif p.kind == "stat":
        base = {"reduceOptions": reduce, "orientation": "auto", "textMode": "auto",
                "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                "wideLayout": True, "showPercentChange": False,
                "percentChangeColorMode": "standard"}
    elif p.kind == "bargauge":
        base = {"reduceOptions": reduce, "orientation": "horizontal", "displayMode": "basic",
                "valueMode": "color", "namePlacement": "auto", "showUnfilled": True,
                "sizing": "auto", "minVizWidth": 8, "minVizHeight": 16, "maxVizHeight": 300,
                "legend": LEGEND}
    elif p.kind == "table":
        base = {"frameIndex": 0, "showHeader": True, "cellHeight": "sm", "footer": {
            "show": False, "reducer": ["sum"], "countRows": False, "fields": []}}
    elif p.kind == "state-timeline":
        base = {"showValue": "auto", "rowHeight": 0.9, "mergeValues": True,
                "alignValue": "left", "legend": LEGEND, "tooltip": TOOLTIP}
    elif p.kind == "text":
        base = {"mode": "markdown", "content": p.description}
    else:
        raise ValueError(f"no options for panel type {p.kind}")
    return {**base, **p.options}


def _field_config(p: P) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    defaults["thresholds"] = steps(p.thresholds or [(None, "green")])
    if p.color_by_thresholds:
        defaults["color"] = {"mode": "thresholds"}
    else:
        defaults["color"] = {"mode": "palette-classic"}
    if p.mappings:
        defaults["mappings"] = p.mappings
    custom = dict(p.custom)
    if p.kind == "timeseries":
        custom = {**TIMESERIES_CUSTOM, **custom}
        if p.thresholds:
            custom.setdefault("thresholdsStyle", {"mode": "dashed"})
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": p.overrides}


def _layout(panels: list[P]) -> list[tuple[int, int]]:
    """Left to right, top to bottom, 24 columns."""
    x = y = row_h = 0
    out = []
    for p in panels:
        if x + p.w > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append((x, y))
        x += p.w
        row_h = max(row_h, p.h)
    return out


def _panel(p: P, pid: int, pos: tuple[int, int], flux_set: bool) -> dict[str, Any] | None:
    ds = FLUX if flux_set else PROM
    targets = []
    for i, q in enumerate(p.queries):
        text = q.flux if flux_set else q.promql
        if text is None:
            continue
        ref = chr(ord("A") + i)
        if flux_set:
            t: dict[str, Any] = {"refId": ref, "datasource": ds, "query": text}
        else:
            t = {"refId": ref, "datasource": ds, "expr": text, "editorMode": "code",
                 "range": not q.instant, "instant": q.instant,
                 "format": "table" if q.table else "time_series"}
            if q.legend:
                t["legendFormat"] = q.legend
        targets.append(t)
    if p.kind != "text" and not targets:
        return None
    out: dict[str, Any] = {
        "type": p.kind, "id": pid, "title": p.title, "description": p.description,
        "gridPos": {"h": p.h, "w": p.w, "x": pos[0], "y": pos[1]},
        "transparent": False, "repeatDirection": "h",
    }
    if p.kind != "text":
        out["datasource"] = ds
        out["targets"] = targets
        out["fieldConfig"] = _field_config(p)
    out["options"] = _options(p)
    if p.transformations:
        out["transformations"] = p.transformations
    return out


def _dashboard(uid: str, title: str, description: str, tags: list[str], time_from: str,
               refresh: str, variables: list[dict[str, Any]], panels: list[P],
               flux_set: bool) -> dict[str, Any]:
    built = []
    kept = [p for p in panels if p.kind == "text" or any(
        (q.flux if flux_set else q.promql) is not None for q in p.queries)]
    for n, (p, pos) in enumerate(zip(kept, _layout(kept), strict=True), start=1):
        panel = _panel(p, n, pos, flux_set)
        if panel is not None:
            built.append(panel)
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["thurrock-streams", *tags], "timezone": "utc", "editable": False,
        "graphTooltip": 1, "fiscalYearStartMonth": 0, "schemaVersion": SCHEMA_VERSION,
        "time": {"from": time_from, "to": "now"}, "refresh": refresh,
        "links": [{"title": "Thurrock Streams", "type": "dashboards",
                   "tags": ["thurrock-streams"], "asDropdown": True, "icon": "external link",
                   "includeVars": False, "keepTime": True, "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": built,
    }


def query_var(name: str, label: str, promql: str, flux_q: str, flux_set: bool,
              multi: bool = True) -> dict[str, Any]:
    """A variable whose values come from the store (every value: "All")."""
    v: dict[str, Any] = {
        "type": "query", "name": name, "label": label, "hide": 0, "skipUrlSync": False,
        "datasource": FLUX if flux_set else PROM, "query": flux_q if flux_set else promql,
        "refresh": 2, "sort": 1,
        "multi": multi, "includeAll": multi, "allowCustomValue": True,
        "current": {"text": ["All"], "value": ["$__all"]} if multi else {},
        "options": [], "regex": "",
    }
    if multi and not flux_set:
        # PromQL matches =~"$var": "All" as one regular expression, not a long alternation.
        v["allValue"] = ".*"
    return v


def custom_var(name: str, label: str, values: list[str], default: list[str],
               multi: bool = False) -> dict[str, Any]:
    """A fixed list of values (the contract's tag values)."""
    shown: str | list[str] = default if multi else default[0]
    return {
        "type": "custom", "name": name, "label": label, "hide": 0, "skipUrlSync": False,
        "query": ",".join(values), "multi": multi, "includeAll": False,
        "allowCustomValue": False,
        "current": {"text": shown, "value": shown},
        "options": [{"text": v, "value": v, "selected": v in default} for v in values],
    }


def flux_tag_values(measurement: str, tag: str) -> str:
    return ('import "influxdata/influxdb/schema"\n'
            f'schema.tagValues(bucket: v.defaultBucket, tag: "{tag}", '
            f'predicate: (r) => r._measurement == "{measurement}", start: -30d)')


# ------------------------------------------------------------------------ dashboards

SITE_T = 'site_id=~"$site_id"'


def traffic_panels() -> list[P]:
    sel = f'{SITE_T},window="$window"'
    win = 'r.window == "${window}"'
    keep = ["site_id"]

    def series(name: str) -> Q:
        return Q(f"traffic_{name}{{{sel}}}", flux("traffic", [name], win, keep=keep),
                 legend="{{site_id}}")

    def latest(name: str) -> Q:
        return Q(f"last_over_time(traffic_{name}{{{sel}}}[$__range])",
                 flux("traffic", [name], win, keep=keep, tail="|> last()"),
                 legend="{{site_id}}", instant=True)

    return [
        P("bargauge", "Congestion index now, per site",
          "The latest congestion index of each site's $window windows: 1 - space-mean "
          "speed / free-flow speed, clipped to 0..1 (CONTRACT.md §4). Colours at 0.3, 0.5 "
          "and 0.75: the congestion alert's clear, raise and escalate levels.",
          [latest("congestion_index")], w=12, h=10, unit="percentunit", decimals=2,
          min=0, max=1, thresholds=CONGESTION_STEPS, color_by_thresholds=True),
        P("timeseries", "Congestion index",
          "Per site and $window window; dashed lines at the alert levels 0.3, 0.5, 0.75.",
          [series("congestion_index")], w=12, h=10, unit="percentunit", decimals=2, min=0,
          max=1, thresholds=CONGESTION_STEPS),
        P("timeseries", "Flow (veh/h)",
          "Vehicles per hour: count × 3600 / window length. Empty windows show 0.",
          [series("flow_vph")], unit="suffix: veh/h", min=0),
        P("timeseries", "Vehicles per window",
          "Vehicles counted in each $window window.", [series("count")], min=0),
        P("timeseries", "Time-mean speed (km/h)",
          "Arithmetic mean of the vehicles' speeds; absent in an empty window.",
          [series("mean_speed_kph")], unit="velocitykmh", min=0),
        P("timeseries", "Space-mean speed (km/h)",
          "Harmonic mean of the speeds above 0: the speed the congestion index uses.",
          [series("space_mean_speed_kph")], unit="velocitykmh", min=0),
        P("timeseries", "V85 (km/h)",
          "85th percentile speed (linear interpolation).",
          [series("p85_speed_kph")], unit="velocitykmh", min=0),
        P("timeseries", "Density (veh/km)",
          "Flow / space-mean speed.", [series("density_vpkm")], unit="suffix: veh/km",
          min=0),
        P("timeseries", "HGV share (%)",
          "Share of the window's vehicles classed hgv.", [series("hgv_pct")],
          unit="percent", min=0, max=100),
    ]


def traffic(flux_set: bool) -> dict[str, Any]:
    site = query_var("site_id", "Site", "label_values(traffic_flow_vph, site_id)",
                     flux_tag_values("traffic", "site_id"), flux_set)
    window = custom_var("window", "Window", ["1m", "15m"], ["1m"])
    return _dashboard(
        "thurrock-traffic" + ("-influxdb" if flux_set else ""),
        "Thurrock traffic overview" + (" (InfluxDB)" if flux_set else ""),
        "Flow, speeds and congestion per detector site and window (measurement traffic).",
        ["traffic"], "now-6h", "1m", [site, window], traffic_panels(), flux_set)


def air_panels() -> list[P]:
    sel = f'{SITE_T},pollutant=~"$pollutant",period="$period"'
    aq_filters = ('contains(value: r.pollutant, set: ${pollutant:json})',
                  'r.period == "${period}"')
    keep = ["site_id", "pollutant", "period"]

    def aq(name: str, legend: str = "{{site_id}} {{pollutant}} {{period}}") -> Q:
        return Q(f"air_quality_{name}{{{sel}}}",
                 flux("air_quality", [name], *aq_filters, keep=keep), legend=legend)

    co_unit = {"matcher": {"id": "byRegexp", "options": ".* co( .*)?$"},
               "properties": [{"id": "unit", "value": "conmgm3"}]}
    daqi_latest = Q('last_over_time(daqi_index{site_id=~"$site_id"}[$__range])',
                    flux("daqi", ["index"], keep=["site_id"], tail="|> last()"),
                    legend="{{site_id}}", instant=True)
    return [
        P("bargauge", "DAQI now, per monitor",
          "The latest hourly Daily Air Quality Index of each monitor (measurement daqi): "
          "the highest pollutant index at that hour end, with its band word and the "
          "ten official DAQI colours.", [daqi_latest], w=12, h=10, decimals=0, min=1,
          max=10, thresholds=DAQI_STEPS, mappings=DAQI_MAPPINGS, color_by_thresholds=True),
        P("timeseries", "DAQI index per monitor",
          "Hourly DAQI 1..10; background bands in the DAQI colours.",
          [Q('daqi_index{site_id=~"$site_id"}',
             flux("daqi", ["index"], keep=["site_id"]), legend="{{site_id}}")],
          w=12, h=10, decimals=0, min=1, max=10, thresholds=DAQI_STEPS,
          custom={"thresholdsStyle": {"mode": "area"}, "fillOpacity": 0}),
        P("timeseries", "Mean concentration ($period)",
          "Mean of the samples per pollutant: µg/m³, CO in mg/m³. 8h (O3, CO) and 24h "
          "(PM2.5, PM10) are running means of the valid hourly means. Empty windows have "
          "no mean.", [aq("mean")], w=24, h=10, unit="conμgm3", min=0,
          overrides=[co_unit]),
        P("timeseries", "DAQI sub-index per pollutant ($period)",
          "The index of each valid mean (NO2 1h, SO2 15m, O3 8h, PM2.5 and PM10 24h).",
          [aq("daqi")], decimals=0, min=1, max=10, thresholds=DAQI_STEPS,
          custom={"thresholdsStyle": {"mode": "area"}}),
        P("timeseries", "Data capture (%)",
          "Share of the window's whole minutes with a sample (running means: of the "
          "hourly means valid). Valid at 75% and above.", [aq("capture_pct")],
          unit="percent", min=0, max=100,
          thresholds=[(None, "red"), (75.0, "green")]),
        P("state-timeline", "Validity ($period)",
          "valid (capture >= 75%) or invalid, per site and pollutant.", [aq("valid")],
          w=24, mappings=[{"type": "value", "options": {
              "0": {"text": "invalid", "color": "red", "index": 0},
              "1": {"text": "valid", "color": "green", "index": 1},
              "false": {"text": "invalid", "color": "red", "index": 2},
              "true": {"text": "valid", "color": "green", "index": 3}}}],
          thresholds=[(None, "red"), (1.0, "green")], color_by_thresholds=True),
    ]


def air(flux_set: bool) -> dict[str, Any]:
    site = query_var("site_id", "Monitor", "label_values(air_quality_mean, site_id)",
                     flux_tag_values("air_quality", "site_id"), flux_set)
    pollutant = custom_var("pollutant", "Pollutant", POLLUTANTS, POLLUTANTS, multi=True)
    period = custom_var("period", "Period", ["15m", "1h", "8h", "24h"], ["1h"])
    return _dashboard(
        "thurrock-air" + ("-influxdb" if flux_set else ""),
        "Thurrock air quality and DAQI" + (" (InfluxDB)" if flux_set else ""),
        "Means per pollutant with data capture, and the UK Daily Air Quality Index per "
        "monitor (measurements air_quality and daqi).",
        ["air-quality"], "now-24h", "1m", [site, pollutant, period], air_panels(), flux_set)


#: A table of an instant query: the evaluation time is not a column.
HIDE_TIME = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]


def alerts_panels() -> list[P]:
    sel = 'site_id=~"$site_id",rule=~"$rule"'
    rule_f = "contains(value: r.rule, set: ${rule:json})"

    def last_t(state: str) -> str:
        return (f'max by (site_id, rule) (tlast_over_time(alerts_value{{{sel},'
                f'state{state}}}[$__range]))')

    active, cleared = last_t('!="cleared"'), last_t('="cleared"')
    open_promql = f"({active} > {cleared}) or ({active} unless {cleared})"
    open_flux = flux("alerts", ["value"], rule_f,
                     tail='|> group(columns: ["site_id", "rule"])\n'
                          '|> sort(columns: ["_time"])\n'
                          '|> last()\n'
                          '|> filter(fn: (r) => r.state != "cleared")\n'
                          '|> group()\n'
                          '|> keep(columns: ["_time", "site_id", "rule", "severity", '
                          '"state", "_value"])')
    events_flux = flux("alerts", ["value", "threshold", "message"], rule_f,
                       tail='|> pivot(rowKey: ["_time", "site_id", "rule", "severity", '
                            '"state"], columnKey: ["_field"], valueColumn: "_value")\n'
                            '|> group()\n'
                            '|> sort(columns: ["_time"], desc: true)')
    time_col = {"matcher": {"id": "byName", "options": "Value"},
                "properties": [{"id": "unit", "value": "dateTimeAsIso"},
                               {"id": "displayName", "value": "last raised or escalated"}]}
    return [
        P("table", "Open alerts",
          "Alerts whose latest event in the time range is raised or escalated, with the "
          "time of that event. The Prometheus-source version reads only the dashboard's "
          "time range: an alert raised before it is not listed.",
          [Q(open_promql, open_flux, instant=True, table=True)], w=24, h=8,
          overrides=[time_col], transformations=HIDE_TIME),
        P("timeseries", "Alert events",
          "Each event's value (the rule's measured value: DAQI index, exceedance count, "
          "congestion index, seconds silent) at its time.",
          [Q(f"alerts_value{{{sel}}}",
             flux("alerts", ["value"], rule_f,
                  keep=["site_id", "rule", "severity", "state"]),
             legend="{{site_id}} {{rule}} {{state}} ({{severity}})")],
          w=24, h=9, custom={"drawStyle": "points", "pointSize": 8, "showPoints": "always"}),
        P("table", "Events in range",
          "Events per site, rule, state and severity in the time range (the InfluxDB "
          "version lists every event with its message, newest first).",
          [Q(f"sum by (site_id, rule, state, severity) "
             f"(count_over_time(alerts_value{{{sel}}}[$__range]))",
             events_flux, instant=True, table=True)], w=16, h=9,
          transformations=[{"id": "organize", "options": {
              "excludeByName": {"Time": True}, "renameByName": {"Value": "events"}}}]),
        P("stat", "Events by state",
          "Raised, escalated and cleared events in the time range.",
          [Q(f"sum by (state) (count_over_time(alerts_value{{{sel}}}[$__range]))",
             flux("alerts", ["value"], rule_f,
                  tail='|> group(columns: ["state"])\n|> count()'),
             legend="{{state}}", instant=True)], w=8, h=9),
    ]


def alerts(flux_set: bool) -> dict[str, Any]:
    site = query_var("site_id", "Site", "label_values(alerts_value, site_id)",
                     flux_tag_values("alerts", "site_id"), flux_set)
    rule = query_var("rule", "Rule", "label_values(alerts_value, rule)",
                     flux_tag_values("alerts", "rule"), flux_set)
    return _dashboard(
        "thurrock-alerts" + ("-influxdb" if flux_set else ""),
        "Thurrock alerts" + (" (InfluxDB)" if flux_set else ""),
        "Alert events of the alerts measurement (CONTRACT.md §6): open alerts and "
        "the latest events.", ["alerts"], "now-7d", "1m", [site, rule], alerts_panels(),
        flux_set)


LANES = ("rewinds", "stale_batches", "duplicates", "missed")
NOTIFIER = ["sent", "failed_attempts", "gave_up", "dropped", "queued"]


def columns(names: list[str]) -> list[dict[str, Any]]:
    """Transformations of a table of instant queries A, B, ...: one row per label set,
    a named column per query, no evaluation-time column."""
    rename = {f"Value #{chr(ord('A') + i)}": n for i, n in enumerate(names)}
    return [{"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True},
                                           "renameByName": rename}}]


def health() -> dict[str, Any]:
    inst = 'instance=~"$instance"'
    pipe = f'{inst},pipeline=~"$pipeline"'

    def rate(metric: str, by: str, sel: str = pipe) -> str:
        return f"sum by ({by}) (rate({metric}{{{sel}}}[$__rate_interval]))"

    def total(metric: str, by: str, sel: str = pipe) -> str:
        return f"sum by ({by}) ({metric}{{{sel}}})"

    panels = [
        P("timeseries", "Readings in, accepted (per second)",
          "Readings read from traffic.readings and air.readings, and those counted in "
          "an aggregate.",
          [Q(rate("thurrock_readings_in_total", "pipeline"), None, "{{pipeline}} in"),
           Q(rate("thurrock_accepted_total", "pipeline"), None, "{{pipeline}} accepted")],
          unit=PER_S, min=0),
        P("timeseries", "Dead letters by reason (per second)",
          "Readings sent to readings.deadletter, by pipeline and reason (decode, "
          "schema, range, future, late).",
          [Q(rate("thurrock_deadlettered_total", "pipeline, reason"), None,
             "{{pipeline}} {{reason}}")], unit=PER_S, min=0),
        P("bargauge", "Dead letters by reason (since worker start)",
          "Counters of the workers selected, summed.",
          [Q(total("thurrock_deadlettered_total", "pipeline, reason"), None,
             "{{pipeline}} {{reason}}", instant=True)], w=8),
        P("stat", "Sink pending points",
          "Points waiting to be written to the store; rising means the store is slow "
          "or away (nothing is lost: Kafka holds them).",
          [Q(f"sum(thurrock_sink_pending_points{{{inst}}})", None, "pending",
             instant=True)], w=4, thresholds=[(None, "green"), (10000.0, "orange")],
          color_by_thresholds=True),
        P("stat", "Store outage (s)",
          "Seconds since the store last failed and has not recovered (0 when healthy).",
          [Q(f"max(thurrock_sink_outage_seconds{{{inst}}})", None, "outage",
             instant=True)], w=4, unit="s", thresholds=[(None, "green"), (1.0, "red")],
          color_by_thresholds=True),
        P("stat", "Points rejected by the store",
          "Points the store refused as bad (dead-lettered), since worker start.",
          [Q(f"sum(thurrock_sink_rejected_points_total{{{inst}}})", None, "rejected",
             instant=True)], w=8, thresholds=OK_STEPS, color_by_thresholds=True),
        P("timeseries", "Sink writes and retries (per second)",
          "Points written to the store, and write retries (backoff while the store is "
          "away or slow).",
          [Q(f"sum(rate(thurrock_sink_written_points_total{{{inst}}}[$__rate_interval]))",
             None, "written points"),
           Q(f"sum(rate(thurrock_sink_retries_total{{{inst}}}[$__rate_interval]))", None,
             "retries")], unit=PER_S, min=0),
        P("timeseries", "Sink pending points per worker",
          "Points waiting to be written, per worker.",
          [Q(f"thurrock_sink_pending_points{{{inst}}}", None, "{{instance}}")], min=0),
        P("timeseries", "Windows closed (per second)",
          "Aggregates made, per pipeline.",
          [Q(rate("thurrock_windows_closed_total", "pipeline"), None, "{{pipeline}}")],
          unit=PER_S, min=0),
        P("timeseries", "Re-keyed and replay-skipped messages (per second)",
          "Messages re-keyed by the site_id in their value, and messages skipped as "
          "already applied after a restart.",
          [Q(rate("thurrock_rekeyed_messages_total", "pipeline"), None,
             "{{pipeline}} re-keyed"),
           Q(rate("thurrock_replayed_skipped_total", "pipeline"), None,
             "{{pipeline}} replay skipped")], unit=PER_S, min=0),
        P("table", "Batch lanes (since worker start)",
          "Per lane (agent): batches that did not start at the offset due (dropped, "
          "partition sought back), stale batches dropped and fetched again (old "
          "generation, rebalance, recovery), messages handed over again and dropped, and "
          "offsets gone by retention before they were processed (missed; must stay 0).",
          [Q(f"sum by (lane) (thurrock_lane_{name}_total{{{inst}}})", None,
             name.replace("_", " "), instant=True, table=True) for name in LANES],
          w=12, transformations=columns([n.replace("_", " ") for n in LANES])),
        P("timeseries", "Alert events and records (per second)",
          "Aggregates the alert engine read, and the events it raised, escalated and "
          "cleared.",
          [Q(f"sum(rate(thurrock_alert_records_total{{{inst}}}[$__rate_interval]))", None,
             "records"),
           Q(f"sum by (state) (rate(thurrock_alert_events_total{{{inst}}}"
             f"[$__rate_interval]))", None, "{{state}}")], unit=PER_S, min=0),
        P("table", "Notifiers (since worker start)",
          "Per notifier: sent, failed attempts, gave up, dropped, and queued now.",
          [Q(f"sum by (notifier) (thurrock_notifier_{name}{{{inst}}})", None, name,
             instant=True, table=True) for name in NOTIFIER],
          w=12, transformations=columns(NOTIFIER)),
        P("text", "Consumer lag",
          "The workers' `/metrics` does not expose Kafka consumer lag (Faust keeps no "
          "such gauge). Watch the workers' consumer group (`TOPIC_PREFIX` followed by "
          "the app id, `thurrock-streams` by default) with the broker's or a Kafka "
          "exporter's metrics; see docs/grafana.md.",
          [], w=12, h=4),
    ]
    inst_var = query_var("instance", "Worker",
                         "label_values(thurrock_sink_pending_points, instance)", "", False)
    pipe_var = query_var("pipeline", "Pipeline",
                         "label_values(thurrock_readings_in_total, pipeline)", "", False)
    return _dashboard(
        "thurrock-pipeline-health", "Thurrock pipeline health",
        "The workers' /metrics as Prometheus (or VictoriaMetrics) scrapes them: readings, "
        "dead letters by reason, the store sink, delivery guard, alerts and notifiers.",
        ["pipeline"], "now-1h", "30s", [inst_var, pipe_var], panels, False)


def build() -> dict[str, dict[str, Any]]:
    """File name -> dashboard."""
    out: dict[str, dict[str, Any]] = {}
    for name, make in (("traffic-overview", traffic), ("air-quality", air),
                       ("alerts", alerts)):
        out[f"{name}.json"] = make(False)
        out[f"{name}-influxdb.json"] = make(True)
    out["pipeline-health.json"] = health()
    return out


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a file differs from what this script makes")
    args = ap.parse_args(argv)
    wanted = build()
    stale = [n for n, d in wanted.items()
             if not (OUT / n).exists() or (OUT / n).read_text() != render(d)]
    extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in wanted)
    if args.check:
        for n in stale:
            print(f"{OUT / n}: not what scripts/grafana_dashboards.py makes", file=sys.stderr)
        for n in extra:
            print(f"{OUT / n}: made by nothing here", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for n in stale:
        (OUT / n).write_text(render(wanted[n]))
        print(f"wrote {OUT / n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
