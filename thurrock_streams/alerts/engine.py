"""The alert engine: aggregate records in, alert events out (CONTRACT.md §6), free of Kafka.

Each site has one :class:`SiteAlerts` state holding its open alerts and the running
counts the rules need. :meth:`AlertEngine.evaluate` takes one aggregate record of that
site and returns the events it causes; :meth:`AlertEngine.silent` checks a site against
the newest event time of the other sites. Everything is driven by event time (window
ends), so a replay of the same aggregates gives the same events.

Rules (defaults in ``data/alert_rules.toml``; docs/alerts.md explains each):

- ``daqi:<pollutant>`` on the DAQI-defining valid means (DOMAIN.md §1): raised at index 4,
  escalated at 7 and 10, cleared after two consecutive valid means at index 3 or below.
  Invalid means neither raise nor clear, nor break a run of low ones.
- ``limit:<name>`` (SI 2010/1001 limits, DOMAIN.md §2): exceedances strictly above the
  limit value by the valid mean rounded to a whole µg/m³ (halves up, as the DAQI rounds,
  so an exceedance is exactly a mean in DAQI band Moderate or above), counted per
  calendar year (UTC) of the window's start; raised (warning) when the count reaches 75%
  of the allowance, escalated when it exceeds the allowance, cleared when a new year
  starts the count again.
- ``congestion`` on the 1-minute windows: raised after N consecutive minutes at or above
  the raise level, escalated after N consecutive minutes at or above the escalation
  level, cleared after M consecutive minutes below the clear level. A minute without
  vehicles counts as free-flowing (index 0); a minute whose vehicles all stood still
  (no speed above 0, so no space-mean speed) counts as fully congested (index 1).
- ``sensor_silent``: a site whose newest window is more than ``after_s`` behind the newest
  window of the other sites of the same kind (which sites count is the agent's choice,
  see :meth:`AlertAgent._silent <thurrock_streams.agents.alerts.AlertAgent._silent>`);
  cleared by a window of its own at or after the event time at which it was found
  silent.
- ``sensor_stuck:<field>``: the pipelines mark a window's record (1-minute traffic,
  15-minute air) ``qc.stuck`` when a run of ``samples`` identical readings reaches into
  it (:mod:`thurrock_streams.qc`); cleared by a record of that field without the mark.

A rule's alert is open from ``raised`` to ``cleared``; an open alert never raises again,
and escalates only to a level it has not reached.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from ..kernels.daqi import DAQI_PERIOD, band_name
from ..readings import POLLUTANT_FIELDS
from .rules import LimitRule, Rules

__all__ = ["SEVERITIES", "AlertEngine", "SiteAlerts"]

#: Severity vocabulary, lowest first: the DAQI band names (DOMAIN.md §1) in lower case.
SEVERITIES = ("low", "moderate", "high", "very high")

_FIELD_OF = {p: f for f, p in POLLUTANT_FIELDS.items()}
_PERIOD_S = {"15m": 900.0, "1h": 3600.0, "8h": 3600.0, "24h": 3600.0}
_UNIT = {"co": "mg/m³"}


def _unit(pollutant: str) -> str:
    return _UNIT.get(pollutant, "µg/m³")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


@dataclass
class SiteAlerts:
    """One site's alert state: open alerts, rule counters, applied offsets (JSON-ready)."""

    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The state as plain JSON values."""
        return {"open": self.open, "rules": self.rules, "seen": self.seen,
                "applied": self.applied}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SiteAlerts:
        """Rebuild a state from :meth:`to_json`."""
        return cls(dict(d.get("open", {})), dict(d.get("rules", {})),
                   {k: float(v) for k, v in d.get("seen", {}).items()},
                   {k: int(v) for k, v in d.get("applied", {}).items()})


@dataclass
class AlertEngine:
    """Evaluates the rules over one site's aggregate records, in the order they come."""

    rules: Rules

    # -- entry points ---------------------------------------------------------------

    def evaluate(self, site: str, state: SiteAlerts, kind: str,
                 rec: dict[str, Any]) -> list[dict[str, Any]]:
        """The events one aggregate record causes; ``state`` is updated in place."""
        events: list[dict[str, Any]] = []
        ts = float(rec["ts"])
        if (kind == "traffic" and rec.get("window") == "1m") or (kind == "air" and (
                rec.get("measurement", "air_quality") == "air_quality")):
            events += self._seen(site, state, kind, ts)
        if kind == "traffic":
            if rec.get("window") == "1m":
                events += self._congestion(site, state, rec, ts)
                events += self._stuck(site, state, rec, ts, ("speed_kph",))
        elif rec.get("measurement", "air_quality") == "air_quality":
            p = str(rec.get("pollutant", ""))
            period = str(rec.get("period", ""))
            events += self._daqi(site, state, rec, p, period, ts)
            for limit in self.rules.limits:
                if limit.pollutant == p and limit.period == period:
                    events += self._limit(site, state, rec, limit, ts)
            if period == "15m" and p in _FIELD_OF:
                events += self._stuck(site, state, rec, ts, (_FIELD_OF[p],))
        return events

    def silent(self, site: str, state: SiteAlerts, kind: str,
               newest: float) -> list[dict[str, Any]]:
        """Raise ``sensor_silent`` when the site's newest window lags ``newest``."""
        after = self.rules.silent_after_s
        last = state.seen.get(kind)
        rule = "sensor_silent"
        if after is None or last is None or rule in state.open:
            return []
        lag = newest - last
        if lag <= after:  # strictly more: air windows end 900 s apart
            return []
        state.open[rule] = {"level": 1, "kind": kind, "since": newest, "last": last}
        return [_event(site, rule, "moderate", "raised", _num(lag), _num(after), newest,
                       f"no {kind} data from {site} since {_iso(last)}: {lag:.0f} s behind "
                       f"the other {kind} sites (limit {after:.0f} s)")]

    # -- rules ----------------------------------------------------------------------

    def _seen(self, site: str, state: SiteAlerts, kind: str, ts: float) -> list[dict[str, Any]]:
        last = state.seen.get(kind)
        if last is not None and ts <= last:
            return []
        state.seen[kind] = ts
        rule = "sensor_silent"
        o = state.open.get(rule)
        # Back only when it caught up with where the others were when it was found silent:
        # a window of its last minutes closed late (by the idle flush) is no sign of life.
        if o is None or o.get("kind") != kind or ts < o["since"]:
            return []
        del state.open[rule]
        gap = ts - o["last"]
        return [_event(site, rule, "low", "cleared", _num(gap),
                       _num(self.rules.silent_after_s or 0.0), ts,
                       f"{kind} data from {site} again after a gap of {gap:.0f} s")]

    def _daqi(self, site: str, state: SiteAlerts, rec: dict[str, Any], p: str, period: str,
              ts: float) -> list[dict[str, Any]]:
        r = self.rules.daqi
        if r is None or p not in r.pollutants or DAQI_PERIOD.get(p) != period:
            return []
        rule = f"daqi:{p}"
        st = state.rules.setdefault(rule, {"ts": -math.inf, "low": 0})
        if ts <= st["ts"]:
            return []  # a rewrite or replay of a window already seen
        st["ts"] = ts
        index = rec.get("daqi")
        if not rec.get("valid") or not isinstance(index, int):
            return []
        levels = [r.raise_at, *r.escalate_at]
        reached = max((lv for lv in levels if index >= lv), default=None)
        o = state.open.get(rule)
        what = f"{p.upper()} {period} mean {rec.get('mean', float('nan')):.1f} {_unit(p)}"
        if o is None:
            if reached is None:
                return []
            state.open[rule] = {"level": reached, "since": ts}
            st["low"] = 0
            return [_event(site, rule, _daqi_severity(reached), "raised", index, reached, ts,
                           f"DAQI {index} ({band_name(index)}) at {site}: {what}")]
        if reached is not None and reached > o["level"]:
            o["level"] = reached
            st["low"] = 0
            return [_event(site, rule, _daqi_severity(reached), "escalated", index, reached, ts,
                           f"DAQI {index} ({band_name(index)}) at {site}: {what}")]
        if index <= r.clear_at_or_below:
            st["low"] += 1
            if st["low"] >= r.clear_after:
                del state.open[rule]
                st["low"] = 0
                return [_event(site, rule, "low", "cleared", index, r.raise_at, ts,
                               f"DAQI back to {index} (Low) at {site} for {r.clear_after} "
                               f"consecutive valid means: {what}")]
        else:
            st["low"] = 0
        return []

    def _limit(self, site: str, state: SiteAlerts, rec: dict[str, Any], limit: LimitRule,
               ts: float) -> list[dict[str, Any]]:
        if limit.day_end_only and ts % 86400.0 != 0.0:
            return []
        rule = f"limit:{limit.name}"
        st = state.rules.setdefault(rule, {"ts": -math.inf, "year": None, "count": 0})
        if ts <= st["ts"]:
            return []
        st["ts"] = ts
        events: list[dict[str, Any]] = []
        year = dt.datetime.fromtimestamp(ts - _PERIOD_S.get(limit.period, 1.0), dt.UTC).year
        if st["year"] != year:
            if rule in state.open and st["year"] is not None:
                del state.open[rule]
                events.append(_event(site, rule, "low", "cleared", 0, limit.allowed, ts,
                                     f"{year}: the count of exceedances of {limit.threshold:g} "
                                     f"{_unit(limit.pollutant)} starts again at {site} "
                                     f"({st['count']} in {st['year']})"))
            st["year"], st["count"] = year, 0
        mean = rec.get("mean")
        if not rec.get("valid") or not isinstance(mean, int | float):
            return events
        if math.floor(float(mean) + 0.5) <= limit.threshold:
            return events
        st["count"] += 1
        n = st["count"]
        o = state.open.get(rule)
        what = (f"{n} exceedance{'s' if n != 1 else ''} of {limit.threshold:g} "
                f"{_unit(limit.pollutant)} ({limit.pollutant.upper()} {limit.period} mean) "
                f"at {site} in {year}; {limit.allowed} allowed")
        if n > limit.allowed and (o is None or o["level"] < 2):
            state.open[rule] = {"level": 2, "since": ts}
            state_name = "raised" if o is None else "escalated"
            events.append(_event(site, rule, "high", state_name, n, limit.allowed, ts,
                                 f"limit exceeded: {what} (latest {float(mean):.1f})"))
        elif o is None and n >= max(limit.warn_at, 1):
            state.open[rule] = {"level": 1, "since": ts}
            events.append(_event(site, rule, "moderate", "raised", n, limit.allowed, ts,
                                 f"warning: {what} (latest {float(mean):.1f})"))
        return events

    def _congestion(self, site: str, state: SiteAlerts, rec: dict[str, Any],
                    ts: float) -> list[dict[str, Any]]:
        r = self.rules.congestion
        if r is None:
            return []
        rule = "congestion"
        st = state.rules.setdefault(rule, {"ts": -math.inf, "hi": 0, "esc": 0, "low": 0})
        if ts <= st["ts"]:
            return []
        if ts - st["ts"] > 60.0:  # a gap in the minutes breaks every run
            st["hi"] = st["esc"] = st["low"] = 0
        st["ts"] = ts
        ci = rec.get("congestion_index")
        if not isinstance(ci, int | float):
            ci = 1.0 if int(rec.get("count", 0)) > 0 else 0.0
        ci = float(ci)
        st["hi"] = st["hi"] + 1 if ci >= r.raise_at else 0
        st["esc"] = st["esc"] + 1 if ci >= r.escalate_at else 0
        st["low"] = st["low"] + 1 if ci < r.clear_below else 0
        o = state.open.get(rule)
        if st["esc"] >= r.minutes and (o is None or o["level"] < 2):
            state.open[rule] = {"level": 2, "since": ts}
            return [_event(site, rule, "high", "raised" if o is None else "escalated",
                           round(ci, 4), r.escalate_at, ts,
                           f"severe congestion at {site}: index >= {r.escalate_at:g} for "
                           f"{r.minutes} minutes (now {ci:.2f})")]
        if o is None and st["hi"] >= r.minutes:
            state.open[rule] = {"level": 1, "since": ts}
            return [_event(site, rule, "moderate", "raised", round(ci, 4), r.raise_at, ts,
                           f"congestion at {site}: index >= {r.raise_at:g} for {r.minutes} "
                           f"minutes (now {ci:.2f})")]
        if o is not None and st["low"] >= r.clear_minutes:
            del state.open[rule]
            return [_event(site, rule, "low", "cleared", round(ci, 4), r.clear_below, ts,
                           f"congestion over at {site}: index below {r.clear_below:g} for "
                           f"{r.clear_minutes} minutes")]
        return []

    def _stuck(self, site: str, state: SiteAlerts, rec: dict[str, Any], ts: float,
               fields: tuple[str, ...]) -> list[dict[str, Any]]:
        n = self.rules.stuck_samples
        if n is None:
            return []
        stuck = (rec.get("qc") or {}).get("stuck") or {}
        events = []
        for f in fields:
            if f not in self.rules.stuck_fields:
                continue
            rule = f"sensor_stuck:{f}"
            st = state.rules.setdefault(rule, {"ts": -math.inf})
            if ts <= st["ts"]:
                continue
            st["ts"] = ts
            o = state.open.get(rule)
            if f in stuck and o is None:
                run = int(stuck[f])
                state.open[rule] = {"level": 1, "since": ts}
                events.append(_event(site, rule, "moderate", "raised", run, n, ts,
                                     f"{f} at {site} unchanged for {run} consecutive "
                                     f"readings (limit {n})"))
            elif f not in stuck and o is not None:
                del state.open[rule]
                events.append(_event(site, rule, "low", "cleared", 0, n, ts,
                                     f"{f} at {site} varies again"))
        return events


def _daqi_severity(level: int) -> str:
    return band_name(level).lower()


def _event(site: str, rule: str, severity: str, state: str, value: float | int,
           threshold: float | int, ts: float, message: str) -> dict[str, Any]:
    return {"site_id": site, "rule": rule, "severity": severity, "state": state,
            "value": value, "threshold": threshold, "ts": ts, "message": message}
