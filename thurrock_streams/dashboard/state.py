"""What the dashboard knows: aggregates and alert events folded into site summaries,
24-hour series and legal-limit counts. Plain data, no I/O: the Kafka adapter feeds it and
the web app reads it, and the unit tests drive it by hand.

Times: ``ts`` is event time (a window's end, epoch s, CONTRACT.md §3); ``arrived`` is the
wall-clock time (epoch s) at which the aggregate reached Kafka (its record timestamp).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from ..alerts.rules import LimitRule
from ..registry import Registry

__all__ = ["HISTORY_S", "DashboardState", "Staleness"]

Kind = Literal["traffic", "air"]

#: Series kept in memory: 24 hours of event time before the newest aggregate seen.
HISTORY_S = 24 * 3600.0
#: Latest alert events kept (newest first in /api/alerts).
LATEST_ALERTS = 100
#: Sites seen in the topics but not in the registry, at most (a bound on memory).
MAX_SITES = 5000
#: Window length of each period tag, s (the limit counts' year is the window start's).
PERIOD_S = {"1m": 60.0, "15m": 900.0, "1h": 3600.0, "8h": 3600.0, "24h": 3600.0}
#: Which records each ``window`` of /api/sites/{id}/series returns, per kind of site.
SERIES_WINDOWS = ("1m", "15m", "1h")


@dataclass(frozen=True)
class Staleness:
    """A site is stale when no aggregate of it reached Kafka for this many seconds of
    wall-clock time (traffic writes a 1-minute window every minute, air a 15-minute one
    every quarter hour)."""

    traffic_s: float = 180.0
    air_s: float = 1200.0

    def after(self, kind: Kind) -> float:
        return self.traffic_s if kind == "traffic" else self.air_s


@dataclass
class _Site:
    site_id: str
    kind: Kind
    name: str
    lat: float | None
    lon: float | None
    registered: bool
    last_window_end: float | None = None
    last_seen: float | None = None
    latest_1m: dict[str, Any] | None = None
    latest_daqi: dict[str, Any] | None = None
    latest_means: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (window key) -> {record key -> record}
    series: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    # window key -> the oldest ts held (so pruning looks at a series only when it must)
    oldest: dict[str, float] = field(default_factory=dict)
    # limit name -> (year, set of window ends counted as exceedances)
    limits: dict[str, tuple[int, set[float]]] = field(default_factory=dict)


def _year_of_start(ts: float, period: str) -> int:
    return dt.datetime.fromtimestamp(ts - PERIOD_S.get(period, 3600.0), dt.UTC).year


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
        and math.isfinite(v) else None


class DashboardState:
    """Sites (from the registry and from the topics), their 24-hour series, open alerts."""

    def __init__(self, registry: Registry, limits: tuple[LimitRule, ...] = (),
                 staleness: Staleness | None = None, history_s: float = HISTORY_S) -> None:
        self.staleness = staleness or Staleness()
        self.history_s = history_s
        self.limits = limits
        self.data_as_of: float | None = None
        self.first_event: float | None = None
        self.open_alerts: dict[tuple[str, str], dict[str, Any]] = {}
        self.latest_alerts: deque[dict[str, Any]] = deque(maxlen=LATEST_ALERTS)
        self._sites: dict[str, _Site] = {}
        for t in registry.traffic.values():
            self._sites[t.site_id] = _Site(t.site_id, "traffic", t.name, t.lat, t.lon, True)
        for a in registry.air.values():
            self._sites[a.site_id] = _Site(a.site_id, "air", a.name, a.lat, a.lon, True)

    # ---- folding ------------------------------------------------------------------
    def add_aggregate(self, kind: Kind, rec: dict[str, Any], arrived: float) -> bool:
        """Fold one aggregate of ``traffic.aggregates`` or ``air.aggregates``; return
        False (and change nothing) for a record without a site_id or a finite ts."""
        site_id, ts = rec.get("site_id"), _num(rec.get("ts"))
        if not isinstance(site_id, str) or not site_id or ts is None:
            return False
        key = self._series_key(kind, rec)
        site = self._site(site_id, kind) if key is not None else None
        if key is None or site is None:
            return False
        window, ident = key
        site.series.setdefault(window, {})[ident] = rec
        site.oldest[window] = min(site.oldest.get(window, ts), ts)
        site.last_window_end = ts if site.last_window_end is None else max(site.last_window_end,
                                                                            ts)
        site.last_seen = arrived if site.last_seen is None else max(site.last_seen, arrived)
        self.data_as_of = ts if self.data_as_of is None else max(self.data_as_of, ts)
        self.first_event = ts if self.first_event is None else min(self.first_event, ts)
        if kind == "traffic" and rec.get("window") == "1m":
            if site.latest_1m is None or ts >= float(site.latest_1m["ts"]):
                site.latest_1m = rec
        elif rec.get("measurement") == "daqi":
            if site.latest_daqi is None or ts >= float(site.latest_daqi["ts"]):
                site.latest_daqi = rec
        elif rec.get("measurement") == "air_quality":
            mkey = f"{rec.get('pollutant')}/{rec.get('period')}"
            old = site.latest_means.get(mkey)
            if old is None or ts >= float(old["ts"]):
                site.latest_means[mkey] = rec
            self._count_limits(site, rec, ts)
        self._prune_site(site)
        return True

    def add_alert(self, event: dict[str, Any]) -> bool:
        """Fold one alert event (CONTRACT.md §6): open on raised/escalated, closed on
        cleared; every event joins the latest events."""
        site_id, rule, st = event.get("site_id"), event.get("rule"), event.get("state")
        if not isinstance(site_id, str) or not isinstance(rule, str) or \
                st not in ("raised", "escalated", "cleared"):
            return False
        if event in self.latest_alerts:
            return True  # the same event read twice (after a reconnect): folded once
        if st == "cleared":
            self.open_alerts.pop((site_id, rule), None)
        else:
            self.open_alerts[(site_id, rule)] = event
        self.latest_alerts.appendleft(event)
        return True

    def _site(self, site_id: str, kind: Kind) -> _Site | None:
        site = self._sites.get(site_id)
        if site is None:
            if len(self._sites) >= MAX_SITES:
                return None
            site = _Site(site_id, kind, site_id, None, None, False)
            self._sites[site_id] = site
        return site

    @staticmethod
    def _series_key(kind: Kind, rec: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        ts = float(rec["ts"])
        if kind == "traffic":
            window = rec.get("window")
            return (str(window), (ts,)) if window in ("1m", "15m") else None
        m = rec.get("measurement")
        if m == "daqi":
            return "1h", (ts, "daqi", "", "")
        if m == "air_quality":
            period = str(rec.get("period"))
            window = "15m" if period == "15m" else "1h"
            return window, (ts, "air_quality", str(rec.get("pollutant")), period)
        return None

    def _count_limits(self, site: _Site, rec: dict[str, Any], ts: float) -> None:
        # As the alert rules count (thurrock_streams/alerts/engine.py, docs/alerts.md): a
        # valid mean whose value rounded half up to a whole µg/m³ is strictly above the
        # limit, per UTC calendar year of the window's start; rewrites count once.
        for rule in self.limits:
            if rule.pollutant != rec.get("pollutant") or rule.period != rec.get("period"):
                continue
            if rule.day_end_only and ts % 86400.0 != 0.0:
                continue
            year = _year_of_start(ts, rule.period)
            held = site.limits.get(rule.name)
            if held is None or held[0] < year:
                held = (year, set())
                site.limits[rule.name] = held
            elif held[0] > year:
                continue
            mean = _num(rec.get("mean"))
            over = bool(rec.get("valid")) and mean is not None and \
                math.floor(mean + 0.5) > rule.threshold
            if over:
                held[1].add(ts)
            else:
                held[1].discard(ts)

    def _prune_site(self, site: _Site) -> None:
        if self.data_as_of is None:
            return
        horizon = self.data_as_of - self.history_s
        for window, recs in site.series.items():
            if site.oldest.get(window, horizon) < horizon:
                kept = {k: r for k, r in recs.items() if k[0] >= horizon}
                site.series[window] = kept
                site.oldest[window] = min((k[0] for k in kept), default=horizon)

    def prune(self) -> None:
        """Drop what is older than the history kept, for every site (call now and then:
        a site that stopped is pruned only here)."""
        for site in self._sites.values():
            self._prune_site(site)

    # ---- reading ------------------------------------------------------------------
    def is_stale(self, site_id: str, now: float) -> bool:
        site = self._sites[site_id]
        return site.last_seen is None or now - site.last_seen > self.staleness.after(site.kind)

    def sites(self, now: float) -> list[dict[str, Any]]:
        """The /api/sites list: registry sites first (traffic, then air), then the others."""
        return [self.summary(s, now) for s in self._sites]

    def has_site(self, site_id: str) -> bool:
        return site_id in self._sites

    def summary(self, site_id: str, now: float) -> dict[str, Any]:
        s = self._sites[site_id]
        out: dict[str, Any] = {
            "site_id": s.site_id, "kind": s.kind, "name": s.name, "lat": s.lat, "lon": s.lon,
            "registered": s.registered, "last_window_end": s.last_window_end,
            "last_seen": s.last_seen, "stale": self.is_stale(site_id, now)}
        if s.kind == "traffic":
            r = s.latest_1m or {}
            for f in ("flow_vph", "mean_speed_kph", "congestion_index", "p85_speed_kph",
                      "count"):
                out[f] = r.get(f)
            out["window_end"] = r.get("ts")
        else:
            d = s.latest_daqi or {}
            out.update(daqi=d.get("index"), band=d.get("band"), pollutant=d.get("pollutant"),
                       daqi_ts=d.get("ts"), limits=self.limit_counts(site_id),
                       means=[s.latest_means[k] for k in sorted(s.latest_means)])
        return out

    def limit_counts(self, site_id: str) -> list[dict[str, Any]]:
        """The running count of exceedances of each legal limit in the newest year seen."""
        s = self._sites[site_id]
        out = []
        for rule in self.limits:
            held = s.limits.get(rule.name)
            out.append({"rule": f"limit:{rule.name}", "pollutant": rule.pollutant,
                        "period": rule.period, "threshold": rule.threshold,
                        "allowed": rule.allowed, "year": held[0] if held else None,
                        "count": len(held[1]) if held else 0})
        return out

    def series(self, site_id: str, window: str) -> list[dict[str, Any]]:
        """The aggregates of one site held for ``window`` (1m, 15m or 1h), oldest first.
        For an air monitor, ``1h`` holds the hourly means, the 8-hour and 24-hour running
        means and the site's DAQI records (all written at hour ends)."""
        recs = self._sites[site_id].series.get(window, {})
        return [recs[k] for k in sorted(recs, key=_order)]

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        """Open alerts, then the latest events, both newest (event time) first."""
        open_ = sorted(self.open_alerts.values(), key=lambda e: _num(e.get("ts")) or 0.0,
                       reverse=True)
        # the last events received, newest event time first (a replay or a catch-up can
        # bring them out of order)
        latest = sorted(self.latest_alerts, key=lambda e: _num(e.get("ts")) or 0.0,
                        reverse=True)
        return {"open": open_, "latest": latest}


def _order(key: tuple[Any, ...]) -> tuple[float, str]:
    return (float(key[0]), "/".join(str(x) for x in key[1:]))
