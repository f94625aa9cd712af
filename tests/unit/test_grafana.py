"""Grafana as code (deploy/grafana/): dashboards against Grafana's dashboard model, the
provisioning files' structure, and the references between them."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.grafana_model import dashboard_errors

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
#: Grafana's own variables, which no dashboard defines.
BUILTIN = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s",
           "__range_ms", "__from", "__to", "__all", "__name", "__timeFilter", "__auto"}
#: DOMAIN.md: the DAQI's ten colours, index 1..10 (UK-AIR's).
DAQI_COLOURS = ["#9CFF9C", "#31FF00", "#31CF00", "#FFFF00", "#FFCF00", "#FF9A00", "#FF6464",
                "#FF0000", "#990000", "#CE30FF"]


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def datasources() -> list[dict[str, Any]]:
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml"))
    assert files
    return [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def queries(d: dict[str, Any]) -> list[str]:
    return [t.get("expr") or t.get("query") or "" for p in panels(d) for t in p.get("targets", [])]


def test_the_expected_dashboards_are_there() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "air-quality-influxdb.json", "air-quality.json", "alerts-influxdb.json", "alerts.json",
        "pipeline-health.json", "traffic-overview-influxdb.json", "traffic-overview.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_conforms_to_grafanas_dashboard_model(path: Path) -> None:
    assert dashboard_errors(load(path)) == []


@pytest.mark.parametrize(("mutate", "expect"), [
    (lambda d: d["panels"][0].__setitem__("gridpos", {}), "gridpos: not in Grafana's model"),
    (lambda d: d["panels"][0]["gridPos"].__setitem__("h", "8"), "expected an integer"),
    (lambda d: d["panels"][0]["gridPos"].pop("w"), "required key 'w' missing"),
    (lambda d: d.pop("schemaVersion"), "required key 'schemaVersion' missing"),
    (lambda d: d["templating"]["list"][0].__setitem__("refresh", 7), "refresh: 7 fits none"),
    (lambda d: d["panels"][0]["targets"][0].pop("refId"), "required key 'refId' missing"),
    (lambda d: d["panels"][0]["options"].__setitem__("orientation", "sideways"),
     "not one of"),
    (lambda d: d["panels"][0]["fieldConfig"]["defaults"]["thresholds"]["steps"][1]
     .__setitem__("value", "two"), "fits none of"),
])
def test_the_model_check_finds_what_grafana_would_not_take(mutate: Any, expect: str) -> None:
    d = copy.deepcopy(load(GRAFANA / "dashboards" / "air-quality.json"))
    mutate(d)
    errors = dashboard_errors(d)
    assert any(expect in e for e in errors), errors


def test_dashboards_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("gd", ROOT / "scripts" / "grafana_dashboards.py")
    assert spec and spec.loader
    gd = importlib.util.module_from_spec(spec)
    sys.modules["gd"] = gd  # dataclasses look their module up
    try:
        spec.loader.exec_module(gd)
    finally:
        del sys.modules["gd"]
    built = gd.build()
    assert sorted(built) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == gd.render(built[path.name]), \
            f"{path.name}: run .venv/bin/python scripts/grafana_dashboards.py"


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "thurrock.yaml").read_text())
    assert doc["apiVersion"] == 1
    by_uid = {ds["uid"]: ds for ds in datasources()}
    influx, prom = by_uid["thurrock-influxdb"], by_uid["thurrock-prometheus"]
    assert influx["type"] == "influxdb" and influx["access"] == "proxy"
    # the workers' settings (CONTRACT.md §7), from the environment, never written here
    assert influx["url"] == "${INFLUX_URL}"
    assert influx["jsonData"] == {"version": "Flux", "organization": "${INFLUX_ORG}",
                                  "defaultBucket": "${INFLUX_BUCKET}", "httpMode": "POST",
                                  "tlsSkipVerify": False}
    assert influx["secureJsonData"] == {"token": "${INFLUX_TOKEN}"}
    assert prom["type"] == "prometheus" and prom["url"] == "${PROMETHEUS_URL}"
    assert [ds["name"] for ds in datasources() if ds.get("isDefault")] == ["Thurrock Prometheus"]
    for ds in datasources():
        assert {"name", "uid", "type", "access", "url"} <= set(ds), ds
    assert len({ds["name"] for ds in datasources()}) == len(datasources())


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yaml"))
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert [d["apiVersion"] for d in docs] == [1]
    (provider,) = docs[0]["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["allowUiUpdates"] is False
    assert isinstance(provider["updateIntervalSeconds"], int)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_reference_provisioned_datasources_and_defined_variables(path: Path) -> None:
    d = load(path)
    known = {(ds["type"], ds["uid"]) for ds in datasources()}
    refs = [p["datasource"] for p in panels(d) if "datasource" in p]
    refs += [t["datasource"] for p in panels(d) for t in p.get("targets", [])]
    refs += [v["datasource"] for v in d["templating"]["list"] if "datasource" in v]
    assert refs
    assert {(r["type"], r["uid"]) for r in refs} <= known
    for p in panels(d):  # a query goes to its panel's data source
        assert all(t["datasource"] == p["datasource"] for t in p.get("targets", []))

    defined = {v["name"] for v in d["templating"]["list"]}
    texts = [*queries(d), *(p["title"] for p in panels(d)), *(p.get("description", "")
                                                              for p in panels(d))]
    texts += [v.get("query", "") for v in d["templating"]["list"] if v["type"] == "query"]
    used = {m for t in texts for m in re.findall(r"\$\{?(\w+)", t)}
    assert used - BUILTIN <= defined, used - BUILTIN - defined


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_title_a_unique_id_and_its_own_place(path: Path) -> None:
    d = load(path)
    ps = panels(d)
    assert all(isinstance(p.get("title"), str) and p["title"].strip() for p in ps)
    titles = [p["title"] for p in ps]
    assert len(set(titles)) == len(titles), "two panels with one title"
    ids = [p["id"] for p in ps]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for p in ps:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
    assert d["uid"] and len(d["uid"]) <= 40
    for p in ps:
        assert all(t.get("expr") or t.get("query") for t in p.get("targets", [])), p["title"]
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(set(refs)) == len(refs)


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_flux_queries_read_the_provisioned_bucket_over_the_time_range() -> None:
    """Flux cannot be run here (no InfluxDB 2): its shape is checked instead."""
    n = 0
    for path in DASHBOARDS:
        d = load(path)
        for p in panels(d):
            for t in p.get("targets", []):
                if t["datasource"]["type"] != "influxdb":
                    continue
                q = t["query"]
                n += 1
                assert q.startswith("from(bucket: v.defaultBucket)\n"), q
                assert "|> range(start: v.timeRangeStart, stop: v.timeRangeStop)" in q
                assert re.search(r'r\._measurement == "(traffic|air_quality|daqi|alerts)"', q)
                assert q.count("(") == q.count(")") and q.count("[") == q.count("]")
                assert q.count('"') % 2 == 0
        for v in d["templating"]["list"]:
            if v.get("datasource", {}).get("type") == "influxdb":
                assert v["query"].startswith('import "influxdata/influxdb/schema"\n')
    assert n >= 15


def test_daqi_panels_use_the_ten_daqi_colours_with_the_band_words() -> None:
    for name in ("air-quality.json", "air-quality-influxdb.json"):
        (now,) = [p for p in load(GRAFANA / "dashboards" / name)["panels"]
                  if p["title"] == "DAQI now, per monitor"]
        d = now["fieldConfig"]["defaults"]
        got = [(s["value"], s["color"]) for s in d["thresholds"]["steps"]]
        assert got == [(None, DAQI_COLOURS[0])] + [
            (float(i + 1), c) for i, c in enumerate(DAQI_COLOURS) if i > 0]
        words = {k: v["text"] for k, v in d["mappings"][0]["options"].items()}
        assert words == {"1": "1 Low", "2": "2 Low", "3": "3 Low", "4": "4 Moderate",
                         "5": "5 Moderate", "6": "6 Moderate", "7": "7 High", "8": "8 High",
                         "9": "9 High", "10": "10 Very High"}


def test_both_sets_show_the_same_panels() -> None:
    for name in ("traffic-overview", "air-quality", "alerts"):
        prom = load(GRAFANA / "dashboards" / f"{name}.json")
        flux = load(GRAFANA / "dashboards" / f"{name}-influxdb.json")
        assert [p["title"] for p in prom["panels"]] == [p["title"] for p in flux["panels"]]
        assert [v["name"] for v in prom["templating"]["list"]] == \
            [v["name"] for v in flux["templating"]["list"]]
