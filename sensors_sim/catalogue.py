"""The ``sites`` command's output: the shared registry as a table or as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from thurrock_streams.registry import Registry

__all__ = ["sites_json", "sites_table"]


def _rows(registry: Registry, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if kind in ("all", "traffic"):
        out += [{"kind": "traffic", **asdict(s)} for _, s in sorted(registry.traffic.items())]
    if kind in ("all", "air"):
        out += [{"kind": "air", **asdict(m)} for _, m in sorted(registry.air.items())]
    return out


def sites_json(registry: Registry, kind: str = "all") -> str:
    """Return the selected sites as a JSON document ``{"sites": [...]}`` plus a newline."""
    doc = orjson.dumps({"sites": _rows(registry, kind)}, option=orjson.OPT_INDENT_2)
    return doc.decode() + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def sites_table(registry: Registry, kind: str = "all") -> str:
    """Return the selected sites as aligned text tables (traffic detectors, air monitors)."""
    lines: list[str] = []
    if kind in ("all", "traffic"):
        rows = [[s.site_id, s.road, s.direction, str(s.lanes), s.road_class,
                 f"{s.speed_limit_mph}", f"{s.free_flow_kph:g}", f"{s.aadt:,}",
                 f"{100 * s.hgv_share:.0f}", f"{s.lat:.5f}", f"{s.lon:.5f}"]
                for _, s in sorted(registry.traffic.items())]
        lines += [f"Traffic detectors ({len(rows)})"]
        lines += _table(["SITE_ID", "ROAD", "DIRECTION", "LANES", "CLASS", "MPH", "FREE_KPH",
                         "AADT", "HGV%", "LAT", "LON"], rows)
    if kind in ("all", "air"):
        rows = [[m.site_id, ",".join(m.pollutants), "yes" if m.near_port else "",
                 m.aqma or "-", f"{m.lat:.5f}", f"{m.lon:.5f}", ",".join(m.nearby_traffic)]
                for _, m in sorted(registry.air.items())]
        if lines:
            lines.append("")
        lines += [f"Air monitors ({len(rows)})"]
        lines += _table(["SITE_ID", "POLLUTANTS", "PORT", "AQMA", "LAT", "LON",
                         "NEARBY_TRAFFIC"], rows)
    return "\n".join(lines) + "\n"
