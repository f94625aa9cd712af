"""The site registry: Thurrock's traffic detectors and air monitors, shared by the
processor (free-flow speeds for the congestion index) and the simulator.

The data file ships inside the package (``thurrock_streams/data/sites.json``), so the
processor runs from any working directory. Speeds in km/h, coordinates WGS84 degrees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from .errors import ThurrockError

__all__ = [
    "DEFAULT_FREE_FLOW_KPH",
    "AirMonitor",
    "Registry",
    "TrafficSite",
    "load_registry",
]

#: Free-flow speed for a site not in the registry (CONTRACT.md §4), km/h.
DEFAULT_FREE_FLOW_KPH = 100.0

RoadClass = Literal["motorway", "trunk_dual", "dual", "single", "urban"]
POLLUTANTS = ("no2", "o3", "so2", "pm25", "pm10", "co")


@dataclass(frozen=True)
class TrafficSite:
    """A roadside vehicle detector: one carriageway direction at one place."""

    site_id: str
    name: str
    road: str
    direction: str
    lanes: int
    road_class: RoadClass
    free_flow_kph: float
    speed_limit_mph: int
    lat: float
    lon: float
    hgv_share: float
    """Typical share of HGVs in the traffic, 0..1 (high near the ports)."""
    aadt: int
    """Typical vehicles per day in this direction (annual average daily traffic)."""


@dataclass(frozen=True)
class AirMonitor:
    """An air-quality monitor, usually in or beside an AQMA."""

    site_id: str
    name: str
    lat: float
    lon: float
    pollutants: tuple[str, ...]
    aqma: str
    nearby_traffic: tuple[str, ...]
    """site_ids of the traffic detectors whose vehicles drive this monitor's NO2 and PM."""
    near_port: bool


@dataclass(frozen=True)
class Registry:
    """All known sites, by site_id."""

    traffic: dict[str, TrafficSite]
    air: dict[str, AirMonitor]

    def free_flow_kph(self, site_id: str) -> float:
        """Free-flow speed of a traffic site, or 100 km/h when it is not registered."""
        site = self.traffic.get(site_id)
        return site.free_flow_kph if site else DEFAULT_FREE_FLOW_KPH


class RegistryError(ThurrockError):
    """The site registry file is malformed."""


def _traffic(entry: dict[str, Any]) -> TrafficSite:
    return TrafficSite(
        site_id=str(entry["site_id"]), name=str(entry["name"]), road=str(entry["road"]),
        direction=str(entry["direction"]), lanes=int(entry["lanes"]),
        road_class=entry["road_class"], free_flow_kph=float(entry["free_flow_kph"]),
        speed_limit_mph=int(entry["speed_limit_mph"]), lat=float(entry["lat"]),
        lon=float(entry["lon"]), hgv_share=float(entry["hgv_share"]), aadt=int(entry["aadt"]),
    )


def _air(entry: dict[str, Any]) -> AirMonitor:
    pollutants = tuple(str(p) for p in entry["pollutants"])
    unknown = set(pollutants) - set(POLLUTANTS)
    if unknown:
        raise RegistryError(f"{entry['site_id']}: unknown pollutants {sorted(unknown)}")
    return AirMonitor(
        site_id=str(entry["site_id"]), name=str(entry["name"]), lat=float(entry["lat"]),
        lon=float(entry["lon"]), pollutants=pollutants, aqma=str(entry.get("aqma", "")),
        nearby_traffic=tuple(str(s) for s in entry.get("nearby_traffic", ())),
        near_port=bool(entry.get("near_port", False)),
    )


def parse_registry(doc: dict[str, Any]) -> Registry:
    """Build a Registry from the parsed JSON document; RegistryError names a bad entry."""
    traffic: dict[str, TrafficSite] = {}
    air: dict[str, AirMonitor] = {}
    for i, entry in enumerate(doc.get("sites", [])):
        try:
            if entry.get("site_id") in traffic or entry.get("site_id") in air:
                raise RegistryError("duplicate site_id")
            if entry["kind"] == "traffic":
                site = _traffic(entry)
                traffic[site.site_id] = site
            elif entry["kind"] == "air":
                mon = _air(entry)
                air[mon.site_id] = mon
            else:
                raise RegistryError(f"unknown kind {entry['kind']!r}")
        except (KeyError, TypeError, ValueError, RegistryError) as exc:
            raise RegistryError(f"sites.json entry {i} ({entry.get('site_id')!r}): {exc}") from exc
    return Registry(traffic=traffic, air=air)


@lru_cache(maxsize=1)
def load_registry() -> Registry:
    """Load the registry that ships inside the package (cached)."""
    text = resources.files("thurrock_streams").joinpath("data/sites.json").read_text("utf-8")
    return parse_registry(json.loads(text))
