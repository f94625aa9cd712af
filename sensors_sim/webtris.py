"""WebTRIS-style 15-minute CSV rows, expanded into plausible vehicle detections.

National Highways' WebTRIS reports give, per site and 15-minute period, vehicle counts by
length bin (0–520, 521–660, 661–1160, 1160+ cm) and by speed bin (mph), stamped at the
period end ("Time Period Ending"). Each row becomes "Total Volume" detections spread over
the 15 minutes ending at that time: classes from the length bins (car, lgv, hgv, hgv),
lengths inside the bin, speeds drawn inside the mph bins and converted to km/h, the slower
speeds going mostly to HGVs. WebTRIS labels the first quarter of an hour ``00:14:00``: an
end minute of 14, 29, 44 or 59 is read as the next whole minute. Parsing is tolerant:
header spelling and spacing, several date formats, blank cells as zero.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from thurrock_streams.registry import Registry

from ._seeds import Stream, rng_for, site_key
from .batch import TRAFFIC_TOPIC, Batch, concat
from .clock import uk_offset_s
from .errors import InputFormatError
from .faults import FaultRates, plan_messages
from .feed import SiteMessages, merge
from .traffic import lane_weights

__all__ = ["MPH_TO_KPH", "PERIOD_S", "WebtrisRow", "expand_row", "read_webtris",
           "webtris_lines"]

MPH_TO_KPH = 1.609344
PERIOD_S = 900.0
_LENGTH_BIN = re.compile(r"^(\d+)(?:-(\d+)|\+)cm$")
_SPEED_BIN = re.compile(r"^(\d+)(?:-(\d+)|\+)mph$")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%Y/%m/%d", "%d-%m-%Y")
#: Length bin lower edge (cm) -> class, and the class's plausible length range (m).
_BIN_CLASS = {0: ("car", 3.5, 5.2), 521: ("lgv", 5.21, 6.6), 661: ("hgv", 6.61, 11.6),
              1160: ("hgv", 11.61, 18.75), 1161: ("hgv", 11.61, 18.75)}


@dataclass(frozen=True)
class WebtrisRow:
    """One parsed CSV row: site name, period end (epoch s) and the bin counts."""

    site: str
    end: float
    lengths: list[tuple[int, int]]
    """(bin lower edge in cm, count)."""
    speeds: list[tuple[float, float, int]]
    """(low mph, high mph exclusive, count)."""
    total: int
    avg_mph: float | None


def _norm(name: str) -> str:
    return re.sub(r"[\s\"']", "", name).lower()


def _count(cell: str | None) -> int:
    text = (cell or "").strip().replace(",", "")
    return int(float(text)) if text else 0


def _parse_date(text: str, line: int) -> datetime:
    head = text.strip().replace("T", " ").split(" ")[0]
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(head, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise InputFormatError(f"report date {text!r} not understood", line)


def _period_end(date: str, end: str, line: int, local_uk: bool) -> float:
    day = _parse_date(date, line)
    parts = [int(p) for p in end.strip().split(":")[:3] if p.strip()]
    if len(parts) < 2:
        raise InputFormatError(f"time period ending {end!r} not understood", line)
    seconds = parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)
    if parts[1] % 15 == 14:  # WebTRIS labels [00:00, 00:15) as 00:14:00
        seconds += 60
    ts = day.timestamp() + seconds
    if local_uk:
        ts -= float(uk_offset_s(np.array([ts - 3600.0]))[0])
    return ts


def _parse(rows: Iterable[dict[str, str | None]], local_uk: bool) -> list[WebtrisRow]:
    out = []
    for line, raw in enumerate(rows, start=2):
        row = {_norm(k): v for k, v in raw.items() if k is not None}
        if not (row.get("reportdate") or "").strip():
            continue  # blank or summary line
        try:
            out.append(_parse_row(row, line, local_uk))
        except ValueError as exc:
            raise InputFormatError(str(exc), line) from None
    return out


def _parse_row(row: dict[str, str | None], line: int, local_uk: bool) -> WebtrisRow:
    lengths, speeds = [], []
    for name, cell in row.items():
        if m := _LENGTH_BIN.match(name):
            lengths.append((int(m.group(1)), _count(cell)))
        elif m := _SPEED_BIN.match(name):
            lo = float(m.group(1))
            hi = float(m.group(2)) + 1.0 if m.group(2) else lo + 15.0
            speeds.append((lo, hi, _count(cell)))
    total_cell = (row.get("totalvolume") or "").strip()
    total = _count(total_cell) if total_cell else sum(c for _, c in lengths)
    if total < 0:
        raise ValueError(f"negative total volume {total}")
    avg = (row.get("avgmph") or "").strip()
    end = _period_end(row["reportdate"] or "", row.get("timeperiodending") or "", line, local_uk)
    site = (row.get("sitename") or "").split(";")[0].strip()[:64] or "WEBTRIS"
    return WebtrisRow(site, end, lengths, speeds, total, float(avg) if avg else None)


def _split(counts: NDArray[np.int64], total: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Counts per bin summing to ``total``: as given when they do, else proportional."""
    if counts.sum() == total:
        return counts
    if counts.sum() == 0:
        return np.zeros_like(counts)
    return rng.multinomial(total, counts / counts.sum())


def expand_row(row: WebtrisRow, site_id: str, lanes: int, seed: int) -> Batch:
    """Expand one 15-minute row into ``row.total`` detections in ``[end - 900, end)``."""
    rng = rng_for(seed, site_key(site_id), Stream.WEBTRIS, int(row.end // PERIOD_S))
    n = row.total
    edges = sorted(row.lengths) or [(0, n)]
    per_bin = _split(np.array([c for _, c in edges]), n, rng)
    if per_bin.sum() != n:
        per_bin = np.array([n] + [0] * (len(edges) - 1))
    spec = [_BIN_CLASS.get(lo, ("hgv", 11.61, 18.75)) for lo, _ in edges]
    cls = np.repeat(np.array([s[0] for s in spec]), per_bin)
    length = np.concatenate([rng.uniform(s[1], s[2], int(k)) for s, k in zip(spec, per_bin,
                                                                               strict=True)])
    hgv = cls == "hgv"
    bins = sorted(row.speeds)
    s_counts = _split(np.array([c for *_, c in bins], dtype=np.int64), n, rng) if bins else None
    if s_counts is not None and s_counts.sum() == n:
        lo = np.repeat([b[0] for b in bins], s_counts)
        hi = np.repeat([b[1] for b in bins], s_counts)
        # Drawn in km/h a little inside the bin, so rounding to 0.1 km/h keeps it there.
        kph = rng.uniform(np.maximum(lo, 0.5) * MPH_TO_KPH + 0.05, hi * MPH_TO_KPH - 0.05)
        mph = np.sort(kph / MPH_TO_KPH)
    else:  # no speed bins: around the average speed
        mph = np.sort(np.clip(rng.normal(row.avg_mph or 60.0, 6.0, n), 0.5, 120.0))
    rank = np.argsort(np.argsort(rng.random(n) + 0.6 * ~hgv))  # HGVs tend to the slow end
    lane = np.empty(n, dtype=np.int64)
    for heavy in (False, True):
        sel = hgv == heavy
        w = lane_weights(lanes, heavy)
        lane[sel] = 1 + np.searchsorted(np.cumsum(w), rng.random(int(sel.sum())) * w.sum(),
                                        side="right")
    ts = np.floor((row.end - PERIOD_S * rng.random(n)) * 1000.0) / 1000.0
    order = np.argsort(ts, kind="stable")
    return Batch(TRAFFIC_TOPIC, site_id, {
        "ts": ts[order],
        "lane": np.minimum(lane, lanes)[order],
        "speed_kph": np.round(mph[rank] * MPH_TO_KPH, 1)[order],
        "length_m": np.round(length, 2)[order],
        "class": cls[order],
    })


def read_webtris(path: str, registry: Registry, seed: int = 0, site_id: str | None = None,
                 local_uk: bool = True) -> list[Batch]:
    """Read a WebTRIS-style CSV and return one time-ordered batch per site."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = _parse(csv.DictReader(fh), local_uk)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFormatError(f"{path}: {exc}") from exc
    batches: dict[str, list[Batch]] = {}
    for row in rows:
        sid = site_id or row.site
        site = registry.traffic.get(sid)
        batches.setdefault(sid, []).append(expand_row(row, sid, site.lanes if site else 2, seed))
    out = []
    for sid in sorted(batches):
        b = concat(batches[sid])
        out.append(b.take(np.argsort(b.ts, kind="stable")))
    return out


def webtris_lines(path: Path, registry: Registry, seed: int = 0, site_id: str | None = None,
                  local_uk: bool = True, frames: int = 0) -> Iterator[dict[str, Any]]:
    """Expand a WebTRIS CSV into feed lines (as parsed JSON), ordered like ``generate``'s."""
    sites = []
    for batch in read_webtris(str(path), registry, seed, site_id, local_uk):
        plan = plan_messages(len(batch), frames, FaultRates(), np.random.default_rng(0), [])
        sites.append(SiteMessages(batch, plan, batch.ts))
    for *_, line in merge(sites):
        yield orjson.loads(line)
