"""The site registry data file (thurrock_streams/data/sites.json): loadable and plausible."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest

from thurrock_streams.registry import load_registry

MPH_TO_KPH = 1.609344
#: Thurrock's bounding box, WGS84 degrees.
LAT, LON = (51.45, 51.56), (0.20, 0.55)
#: Highest speed limit (mph) a road class can carry.
CLASS_MAX_MPH = {"motorway": 70, "trunk_dual": 70, "dual": 70, "single": 60, "urban": 40}


def _raw() -> list[dict[str, Any]]:
    text = resources.files("thurrock_streams").joinpath("data/sites.json").read_text("utf-8")
    sites: list[dict[str, Any]] = json.loads(text)["sites"]
    return sites


def test_loads_with_enough_sites() -> None:
    reg = load_registry()
    assert len(reg.traffic) >= 16
    assert len(reg.air) >= 6


def test_ids_unique_and_well_formed() -> None:
    ids = [s["site_id"] for s in _raw()]
    assert len(ids) == len(set(ids))
    for sid in ids:
        assert re.fullmatch(r"[A-Z0-9]+(-[A-Z0-9]+)*", sid), sid
        assert len(sid) <= 64


def test_coordinates_inside_thurrock() -> None:
    for s in _raw():
        assert LAT[0] <= s["lat"] <= LAT[1], s["site_id"]
        assert LON[0] <= s["lon"] <= LON[1], s["site_id"]
        assert round(s["lat"], 5) == s["lat"] and round(s["lon"], 5) == s["lon"]


def test_free_flow_speed_matches_limit_and_class() -> None:
    for site in load_registry().traffic.values():
        assert site.speed_limit_mph <= CLASS_MAX_MPH[site.road_class], site.site_id
        assert site.free_flow_kph == pytest.approx(site.speed_limit_mph * MPH_TO_KPH, abs=1.0)
        if site.road_class == "motorway":
            assert site.free_flow_kph == 113.0
        if site.road_class == "urban":
            assert site.free_flow_kph <= 64.0


def test_traffic_fields_plausible() -> None:
    for site in load_registry().traffic.values():
        assert 1 <= site.lanes <= 8
        assert 0.0 <= site.hgv_share <= 1.0
        assert 1_000 <= site.aadt <= 120_000
        assert site.direction in ("northbound", "southbound", "eastbound", "westbound")
        if site.road_class in ("single", "urban"):
            assert site.lanes == 1
        if site.road in ("A1089", "A1014"):  # the port roads
            assert 0.3 <= site.hgv_share <= 0.45


def test_required_roads_covered_in_both_directions() -> None:
    reg = load_registry()
    ids = set(reg.traffic)
    for place in ("A13-STIFFORD", "A13-ORSETT-COCK", "A13-BAKER-ST", "A13-STANFORD",
                  "M25-J30", "M25-J31", "A1089-TILBURY", "A1014-MANORWAY", "A1306-PURFLEET",
                  "A1306-W-THURROCK", "A126-GRAYS", "A128-ORSETT"):
        dirs = {sid.rsplit("-", 1)[1] for sid in ids if sid.startswith(place + "-")}
        assert len(dirs) == 2, place
    a282 = [s for s in reg.traffic.values() if s.road == "A282"]
    assert {s.direction for s in a282} == {"northbound", "southbound"}
    assert all(s.lanes == 4 for s in a282)
    assert sum(s.aadt for s in a282) > 130_000  # the Dartford Crossing


def test_air_monitors() -> None:
    reg = load_registry()
    for mon in reg.air.values():
        assert mon.pollutants and "no2" in mon.pollutants
        assert len(set(mon.pollutants)) == len(mon.pollutants)
        assert mon.nearby_traffic and all(t in reg.traffic for t in mon.nearby_traffic)
        if not mon.near_port:
            assert "so2" not in mon.pollutants and "co" not in mon.pollutants
    sets = [set(m.pollutants) for m in reg.air.values()]
    assert any(len(s) == 6 for s in sets)
    assert sum(s <= {"no2", "pm10", "pm25"} for s in sets) >= 3
    places = " ".join(m.aqma + " " + m.name for m in reg.air.values())
    for place in ("Purfleet", "Tilbury", "Grays", "Stanford-le-Hope", "Aveley", "Lakeside"):
        assert place in places
    assert any(m.near_port and "Tilbury" in m.name for m in reg.air.values())
