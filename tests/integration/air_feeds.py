"""A deterministic air feed and what the processor must write for it, computed independently.

The feed covers 26 hours at three monitors (CONTRACT.md §2, §3, §5). The expectations are
worked out here in plain Python with :mod:`decimal` — no kernel, pipeline or engine of the
project is used — from the contract's own words:

- a sample is ``late`` when a window (15 min or 1 h) that would hold it is closed, i.e. its
  end plus ``ALLOWED_LATENESS_S`` is at or below the site's watermark (the largest ``ts``
  accepted before it); late samples count nowhere;
- per pollutant, every 15m and 1h window from the one holding its first sample to the one
  holding its last is written: mean of the samples (absent when none), ``capture_pct`` =
  100 × distinct minutes with a sample / minutes in the window, ``valid`` at >= 75%;
- running 8h (o3, co) and 24h (pm25, pm10) means at every hour end with a 1h record: the
  valid hours among the last 8 / 24 (hours before the pollutant's first sample missing),
  valid at >= 75%, averaging the valid hourly means only;
- DAQI sub-indices from valid means (NO2 1h, SO2 15m, O3 8h, PM 24h), rounded once, halves
  up, then banded with DOMAIN.md §1's table; the site's ``daqi`` record at hour end H is
  the highest index ending at H (SO2: its four 15-minute windows in the hour), ties to the
  first of no2, so2, o3, pm25, pm10.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from .feeds import T0

H = 3600
LATENESS_S = 30
HOURS = 26
#: Phase 1 is every sample sent before the first one stamped at or after this instant.
CUT = T0 + 13 * H

FIELD = {"no2": "no2_ugm3", "o3": "o3_ugm3", "so2": "so2_ugm3", "pm25": "pm25_ugm3",
         "pm10": "pm10_ugm3", "co": "co_mgm3"}
RUNNING = {"o3": 8, "co": 8, "pm25": 24, "pm10": 24}
PERIOD_S = {"15m": 900, "1h": 3600}
#: DAQI pollutants in tie-break order, the period each index is taken from.
DAQI_FROM = {"no2": "1h", "so2": "15m", "o3": "8h", "pm25": "24h", "pm10": "24h"}
#: Lower bounds (whole µg/m³) of DAQI indices 2..10 — DOMAIN.md §1, Defra 2013.
DAQI_LOWER = {
    "o3": (34, 67, 101, 121, 141, 161, 188, 214, 241),
    "no2": (68, 135, 201, 268, 335, 401, 468, 535, 601),
    "so2": (89, 178, 267, 355, 444, 533, 711, 888, 1065),
    "pm25": (12, 24, 36, 42, 48, 54, 59, 65, 71),
    "pm10": (17, 34, 51, 59, 67, 76, 84, 92, 101),
}


def band(index: int) -> str:
    """Low 1–3, Moderate 4–6, High 7–9, Very High 10."""
    return "Low" if index <= 3 else "Moderate" if index <= 6 else "High" if index <= 9 \
        else "Very High"


def daqi_of(pollutant: str, mean: Decimal) -> int:
    """Round once, halves up, to a whole µg/m³, then band."""
    frac = mean - int(mean)
    if frac != Decimal("0.5") and abs(frac - Decimal("0.5")) < Decimal("1e-6"):
        raise ValueError(f"feed design: {pollutant} mean {mean} is too close to a half")
    whole = int(mean.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return 1 + sum(whole >= lower for lower in DAQI_LOWER[pollutant])


@dataclass
class Row:
    """One sample: its time and pollutant values (a pollutant not in ``values`` is absent)."""

    ts: float
    values: dict[str, float]
    single: bool = False
    """Sent as a message of its own (else in a frame with its neighbours)."""
    null: bool = False
    """As a single message: absent pollutants of the site are sent as explicit nulls."""
    tag: str = ""


@dataclass
class Site:
    site_id: str
    pollutants: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    frame_sizes: tuple[int, ...] = (25,)


Key = tuple[str, str, str, float]  # site, pollutant, period, window end
Record = dict[str, float]


@dataclass
class Expected:
    """What an uninterrupted run writes."""

    air: dict[Key, Record]
    """``air_quality`` points: capture_pct, valid (1.0/0.0), mean and daqi where defined."""
    daqi: dict[tuple[str, float], tuple[int, str]]
    """Final ``daqi`` record per (site, hour end): (index, pollutant)."""
    daqi_first: dict[tuple[str, float], tuple[int, str]]
    """Hours whose record is first written with another value (a window then held back)."""
    late: list[tuple[str, float, int | None]]
    """Late samples: (site, ts, row in its frame or None for a single message)."""
    readings: int


@dataclass
class AirFeed:
    sites: list[Site]
    phase1: list[tuple[bytes, bytes]]
    phase2: list[tuple[bytes, bytes]]
    late_rows: list[tuple[str, float, int | None]]

    @property
    def messages(self) -> list[tuple[bytes, bytes]]:
        return self.phase1 + self.phase2

    def expected(self) -> Expected:
        air: dict[Key, Record] = {}
        daqi: dict[tuple[str, float], tuple[int, str]] = {}
        first: dict[tuple[str, float], tuple[int, str]] = {}
        late: list[tuple[str, float, int | None]] = []
        n = 0
        for site in self.sites:
            n += len(site.rows)
            accepted, late_ts, w1, last1 = accept(site.rows)
            late += [r for r in self.late_rows if r[0] == site.site_id]
            assert sorted(ts for s, ts, _ in late if s == site.site_id) == sorted(late_ts)
            recs = site_records(site.site_id, [r for r in accepted if r.tag != "closing"])
            edge = max(r.ts for r in accepted) - LATENESS_S  # the final watermark's reach
            assert all(end <= edge for _, _, _, end in recs), "a window would stay open"
            air.update(recs)
            final = daqi_records(site.site_id, recs, lambda key: True)

            def known(key: Key, w1: float = w1, last1: dict[str, float] = last1) -> bool:
                # written when its window closed in phase 1, rather than held back
                _, p, period, end = key
                size = PERIOD_S.get(period, H)
                start = end - size
                return end + LATENESS_S <= w1 and p in last1 and \
                    start <= math.floor(last1[p] / size) * size
            early = daqi_records(site.site_id, recs, known)
            for hour, value in final.items():
                if hour[1] + LATENESS_S <= w1 and early.get(hour, value) != value:
                    first[hour] = early[hour]
            daqi.update(final)
        return Expected(air, daqi, first, late, n)


def accept(rows: list[Row]) -> tuple[list[Row], list[float], float, dict[str, float]]:
    """Rows in send order -> accepted rows, late ts, phase-1 watermark and last samples."""
    w = -math.inf
    ok: list[Row] = []
    late: list[float] = []
    w1 = -math.inf
    last1: dict[str, float] = {}
    phase1 = True
    for r in rows:
        if r.ts >= CUT and r.tag in ("", "closing"):
            phase1 = False
        if any(math.floor(r.ts / s) * s + s + LATENESS_S <= w for s in (900, 3600)):
            late.append(r.ts)
            continue
        ok.append(r)
        w = max(w, r.ts)
        if phase1:
            w1 = w
            for p in r.values:
                last1[p] = max(last1.get(p, -math.inf), r.ts)
    return ok, late, w1, last1


def _mean(values: Iterable[Decimal]) -> Decimal | None:
    vs = list(values)
    if not vs:
        return None
    with localcontext() as ctx:
        ctx.prec = 40
        return sum(vs, Decimal(0)) / len(vs)


def site_records(site: str, rows: list[Row]) -> dict[Key, Record]:
    """Every air_quality record of one site from its accepted samples."""
    out: dict[Key, Record] = {}
    for p in FIELD:
        samples = [(r.ts, Decimal(repr(r.values[p]))) for r in rows if p in r.values]
        if not samples:
            continue
        t_first = min(t for t, _ in samples)
        t_last = max(t for t, _ in samples)
        hourly: list[tuple[Decimal | None, bool]] = []
        for period, size in PERIOD_S.items():
            start = math.floor(t_first / size) * size
            while start <= t_last:
                inside = [(t, v) for t, v in samples if start <= t < start + size]
                minutes = {math.floor(t / 60) for t, _ in inside}
                mean = _mean(v for _, v in inside)
                valid = 4 * len(minutes) >= 3 * (size // 60)
                rec: Record = {"capture_pct": 100.0 * len(minutes) / (size // 60),
                               "valid": 1.0 if valid else 0.0}
                if mean is not None:
                    rec["mean"] = float(mean)
                    if valid and DAQI_FROM.get(p) == period:
                        rec["daqi"] = daqi_of(p, mean)
                out[(site, p, period, float(start + size))] = rec
                if period == "1h":
                    hourly.append((mean, valid and mean is not None))
                start += size
        if p in RUNNING:
            n_hours = RUNNING[p]
            first_end = math.floor(t_first / H) * H + H
            for i in range(len(hourly)):
                span = hourly[max(0, i - n_hours + 1):i + 1]  # earlier hours: missing
                good = [m for m, ok in span if ok and m is not None]
                valid = 4 * len(good) >= 3 * n_hours
                rec = {"capture_pct": 100.0 * len(good) / n_hours,
                       "valid": 1.0 if valid else 0.0}
                mean = _mean(good)
                if mean is not None:
                    rec["mean"] = float(mean)
                    if valid and DAQI_FROM.get(p) == f"{n_hours}h":
                        rec["daqi"] = daqi_of(p, mean)
                out[(site, p, f"{n_hours}h", float(first_end + i * H))] = rec
    return out


def daqi_records(site: str, recs: dict[Key, Record], known: Callable[[Key], bool]
                 ) -> dict[tuple[str, float], tuple[int, str]]:
    """The daqi record of every hour end from the (known) records' indices."""
    parts: dict[float, dict[str, int]] = {}
    for key, rec in recs.items():
        _, p, _, end = key
        if "daqi" not in rec or not known(key):
            continue
        hour = float(math.ceil(end / H) * H)
        slot = parts.setdefault(hour, {})
        slot[p] = max(slot.get(p, 0), int(rec["daqi"]))
    out: dict[tuple[str, float], tuple[int, str]] = {}
    for hour, slot in parts.items():
        best = max(slot.values())
        pollutant = next(p for p in DAQI_FROM if slot.get(p) == best)
        out[(site, hour)] = (best, pollutant)
    return out


# --- the feed -----------------------------------------------------------------------------

def _minutes() -> Iterable[tuple[int, int, int]]:
    for m in range(HOURS * 60):
        yield m, m // 60, m % 60


def port_site(site_id: str) -> Site:
    """All of no2, o3, so2, co, pm25; singles and frames; the edge cases of the feed."""
    s = Site(site_id, ("no2", "o3", "so2", "co", "pm25"), frame_sizes=(25, 9, 40))
    at = {}  # base row index by minute
    for m, h, mm in _minutes():
        v: dict[str, float] = {}
        if not ((h == 5 and mm >= 44) or (h == 6 and 30 <= mm < 45)):  # 73.3% and 75%
            v["no2"] = 200.49 if h == 2 else 200.5 if h == 3 else round(
                30 + 3 * (h % 5) + 0.1 * (mm % 10), 1)
        if not 10 <= h <= 12:  # O3 analyser outage: three whole hours
            v["o3"] = round(105 + h % 4 + 0.2 * (mm % 5), 1)
        v["so2"] = (266.49 if h == 8 and mm < 15 else 266.5 if h == 8 and mm < 30
                    else round(8 + 0.5 * (mm % 4), 1))
        v["co"] = round(0.3 + 0.01 * (mm % 20) + 0.05 * (h % 3), 2)
        v["pm25"] = 35.4 if mm % 2 == 0 else 35.6
        at[m] = len(s.rows)
        s.rows.append(Row(T0 + 60 * m + 30, v, single=m % 13 == 0, null=(m // 13) % 2 == 1))

    def t(h: int, m: int, sec: int) -> float:
        return float(T0 + h * H + m * 60 + sec)

    def after(h: int, m: int, *extra: Row) -> None:
        i = at[h * 60 + m] + 1
        s.rows[i:i] = list(extra)
        for k in at:
            if k > h * 60 + m:
                at[k] += len(extra)

    # hour 6: two minutes with a second sample (they count in the mean, not in capture)
    after(6, 2, Row(t(6, 2, 45), {"no2": 41.0}))
    after(6, 50, Row(t(6, 50, 45), {"no2": 42.0}))
    # hour 7: out of order within the allowed lateness, and late samples
    after(7, 5, Row(t(7, 5, 15), {"no2": 99.9}, single=True, tag="ooo"))
    after(7, 14, Row(t(7, 15, 20), {"no2": 50.0}, single=True),
          Row(t(7, 14, 50), {"no2": 98.7}, single=True, tag="ooo"))  # W = end + 20 s
    after(7, 15, Row(t(7, 14, 40), {"no2": 999.0}, single=True, tag="late"))  # W = end + 30 s
    after(7, 20, Row(t(6, 50, 10), {"no2": 999.0, "o3": 999.0}, single=True, tag="late"))
    # its 15-minute window is closed, its hour is not: late all the same
    after(7, 45, Row(t(7, 29, 0), {"no2": 999.0}, single=True, tag="late"))
    # inside frames: a late row and one out of order within the lateness
    after(9, 1, Row(t(8, 40, 0), {"no2": 999.0, "so2": 999.0}, tag="late"))
    after(9, 10, Row(t(9, 10, 5), {"no2": 77.7}, tag="ooo"))
    return s


def roadside_site(site_id: str) -> Site:
    """NO2 and PM10 only, single readings; PM10 24h mean exactly 50.5 (index 4)."""
    s = Site(site_id, ("no2", "pm10"))
    for m, h, mm in _minutes():
        v = {"no2": round(45 + 2 * (h % 6) + 0.1 * (mm % 7), 1)}
        if h != 20:
            v["pm10"] = 50.0 if mm % 2 == 0 else 51.0
        elif mm < 30:  # half an hour of 80: an invalid hour, left out of the 24h means
            v["pm10"] = 80.0
        s.rows.append(Row(T0 + 60 * m + 30, v, single=True, null=mm % 2 == 1))
    return s


def grays_site(site_id: str) -> Site:
    """NO2, O3 (from 03:20) and PM10 (24h mean 50.49, index 3), from 01:07; frames only."""
    s = Site(site_id, ("no2", "o3", "pm10"), frame_sizes=(15,))
    for m, h, mm in _minutes():
        if m < 67:
            continue
        v = {"no2": round(100 + 3 * (h % 4) + 0.1 * (mm % 9), 1), "pm10": 50.49}
        if m >= 200:
            v["o3"] = round(130 + h % 3 + 0.1 * (mm % 6), 1)
        s.rows.append(Row(T0 + 60 * m + 30, v))
    return s


def _message(site: Site, rows: list[Row]) -> dict[str, Any]:
    if len(rows) == 1 and rows[0].single:
        r = rows[0]
        value: dict[str, Any] = {"site_id": site.site_id, "ts": r.ts}
        for p in FIELD:
            if p in r.values:
                value[FIELD[p]] = r.values[p]
            elif r.null and p in site.pollutants:
                value[FIELD[p]] = None
        return value
    cols: dict[str, list[Any]] = {"ts": [r.ts for r in rows]}
    for p in FIELD:
        if any(p in r.values for r in rows):
            cols[FIELD[p]] = [r.values.get(p) for r in rows]
    return {"site_id": site.site_id, "columns": cols}


def _messages(site: Site, rows: list[Row], late: list[tuple[str, float, int | None]]
              ) -> list[bytes]:
    out: list[bytes] = []
    i = k = 0
    while i < len(rows):
        if rows[i].single:
            chunk = [rows[i]]
        else:
            size = site.frame_sizes[k % len(site.frame_sizes)]
            k += 1
            j = i
            while j < len(rows) and j - i < size and not rows[j].single:
                j += 1
            chunk = rows[i:j]
        for row_ix, r in enumerate(chunk):
            if r.tag == "late":
                late.append((site.site_id, r.ts, row_ix if len(chunk) > 1 or not r.single
                             else None))
        out.append(json.dumps(_message(site, chunk)).encode())
        i += len(chunk)
    return out


def _interleave(per_site: list[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for k in range(max((len(m) for _, m in per_site), default=0)):
        out += [(key, m[k]) for key, m in per_site if k < len(m)]
    return out


def air_feed(prefix: str) -> AirFeed:
    """The three monitors (ids start with ``prefix``), in two phases split at ``CUT``.

    Each site ends with a *closing* sample an hour after its data, of a pollutant it does
    not otherwise measure: it moves the watermark past every window of the real data (so
    all of them are written without an idle flush), while its own windows never close.
    """
    sites = [port_site(f"{prefix}AQ-PORT"), roadside_site(f'{prefix}AQ Roadside, "A13"=J30'),
             grays_site(f"{prefix}AQ-GRAYS")]
    closing = {"AQ-PORT": "pm10", "AQ Roadside": "so2", "AQ-GRAYS": "co"}
    for s in sites:
        p = next(v for k, v in closing.items() if s.site_id[len(prefix):].startswith(k))
        assert p not in s.pollutants
        s.rows.append(Row(T0 + (HOURS + 1) * H + 30, {p: 1.0}, single=True, tag="closing"))
    late: list[tuple[str, float, int | None]] = []
    phases: list[list[tuple[bytes, list[bytes]]]] = [[], []]
    for s in sites:
        cut = next(i for i, r in enumerate(s.rows) if r.ts >= CUT and not r.tag)
        key = s.site_id.encode()
        phases[0].append((key, _messages(s, s.rows[:cut], late)))
        phases[1].append((key, _messages(s, s.rows[cut:], late)))
    return AirFeed(sites, _interleave(phases[0]), _interleave(phases[1]), late)


def consume_settled(bootstrap: str, topic: str, at_least: int, quiet_s: float = 1.5,
                    timeout: float = 60) -> list[Any]:
    """Every record of ``topic`` from the start: at least ``at_least``, then until none has
    come for ``quiet_s``. (The local broker's ListOffsets can report an end offset below
    the last record, so the end is not taken from it.)"""
    import time

    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while len(out) < at_least or time.monotonic() - last_new < quiet_s:
            assert time.monotonic() < deadline, f"timed out reading {topic}: {len(out)} records"
            got = [r for batch in c.poll(timeout_ms=200).values() for r in batch]
            if got:
                out += got
                last_new = time.monotonic()
        return out
    finally:
        c.close()
