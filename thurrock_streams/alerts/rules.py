"""Alert rules: a TOML file, validated with errors that name the bad entry.

The defaults ship in the package (``thurrock_streams/data/alert_rules.toml``); the
setting ``ALERT_RULES_FILE`` points at another file with the same layout.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ThurrockError
from ..kernels.daqi import DAQI_PERIOD

__all__ = ["CongestionRule", "DaqiRule", "LimitRule", "Rules", "RulesError", "load_rules"]

_PERIODS = ("15m", "1h", "8h", "24h")
_POLLUTANTS = ("no2", "o3", "so2", "pm25", "pm10", "co")


class RulesError(ThurrockError):
    """The alert rules file is malformed; the message names the entry."""


@dataclass(frozen=True)
class DaqiRule:
    """``daqi:<pollutant>``: DAQI bands of the DAQI-defining means."""

    pollutants: tuple[str, ...]
    raise_at: int
    escalate_at: tuple[int, ...]
    clear_at_or_below: int
    clear_after: int


@dataclass(frozen=True)
class LimitRule:
    """``limit:<name>``: exceedances of a legal limit per calendar year (UTC)."""

    name: str
    pollutant: str
    period: str
    threshold: float
    allowed: int
    day_end_only: bool = False

    @property
    def warn_at(self) -> int:
        """Exceedances that raise the warning: 75% of the allowance, rounded up."""
        return -(-self.allowed * 3 // 4)


@dataclass(frozen=True)
class CongestionRule:
    """``congestion``: the 1-minute congestion index over consecutive minutes."""

    raise_at: float
    escalate_at: float
    minutes: int
    clear_below: float
    clear_minutes: int


@dataclass(frozen=True)
class Rules:
    """Every rule in force."""

    daqi: DaqiRule | None
    limits: tuple[LimitRule, ...]
    congestion: CongestionRule | None
    silent_after_s: float | None
    stuck_samples: int | None
    stuck_fields: tuple[str, ...]


def _need(d: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise RulesError(f"{where}: '{key}' is missing")
    v = d[key]
    if (isinstance(v, bool) and kind is not bool) or not isinstance(v, kind):
        raise RulesError(f"{where}: '{key}' = {v!r} has the wrong type")
    return v


def _daqi(d: dict[str, Any]) -> DaqiRule:
    w = "[daqi]"
    pollutants = tuple(_need(d, w, "pollutants", list))
    bad = [p for p in pollutants if p not in DAQI_PERIOD]
    if bad:
        raise RulesError(f"{w}: pollutants {bad} have no DAQI index")
    rule = DaqiRule(pollutants, _need(d, w, "raise_at", int),
                    tuple(_need(d, w, "escalate_at", list)),
                    _need(d, w, "clear_at_or_below", int), _need(d, w, "clear_after", int))
    levels = [rule.raise_at, *rule.escalate_at]
    if levels != sorted(set(levels)) or not all(1 <= x <= 10 for x in levels):
        raise RulesError(f"{w}: raise_at and escalate_at must rise within 1..10")
    if not 1 <= rule.clear_at_or_below < rule.raise_at or rule.clear_after < 1:
        raise RulesError(f"{w}: need 1 <= clear_at_or_below < raise_at and clear_after >= 1")
    return rule


def _limit(i: int, d: dict[str, Any]) -> LimitRule:
    w = f"[[limit]] #{i + 1} ({d.get('name', '?')})"
    rule = LimitRule(
        name=_need(d, w, "name", str), pollutant=_need(d, w, "pollutant", str),
        period=_need(d, w, "period", str), threshold=float(_need(d, w, "threshold", (int, float))),
        allowed=_need(d, w, "allowed", int), day_end_only=bool(d.get("day_end_only", False)))
    if rule.pollutant not in _POLLUTANTS or rule.period not in _PERIODS:
        raise RulesError(f"{w}: unknown pollutant {rule.pollutant!r} or period {rule.period!r}")
    if rule.allowed < 0 or rule.threshold < 0:
        raise RulesError(f"{w}: threshold and allowed must not be negative")
    return rule


def _congestion(d: dict[str, Any]) -> CongestionRule:
    w = "[congestion]"
    num = (int, float)
    rule = CongestionRule(
        float(_need(d, w, "raise_at", num)), float(_need(d, w, "escalate_at", num)),
        _need(d, w, "minutes", int), float(_need(d, w, "clear_below", num)),
        _need(d, w, "clear_minutes", int))
    if not 0 <= rule.clear_below < rule.raise_at <= rule.escalate_at <= 1:
        raise RulesError(f"{w}: need 0 <= clear_below < raise_at <= escalate_at <= 1")
    if rule.minutes < 1 or rule.clear_minutes < 1:
        raise RulesError(f"{w}: minutes and clear_minutes must be at least 1")
    return rule


def parse_rules(doc: dict[str, Any]) -> Rules:
    """Validate a parsed rules document."""
    unknown = set(doc) - {"daqi", "limit", "congestion", "silent", "stuck"}
    if unknown:
        raise RulesError(f"unknown sections {sorted(unknown)}")
    limits = tuple(_limit(i, d) for i, d in enumerate(doc.get("limit", [])))
    if len({r.name for r in limits}) != len(limits):
        raise RulesError("[[limit]]: names must be unique")
    silent = doc.get("silent")
    stuck = doc.get("stuck")
    return Rules(
        daqi=_daqi(doc["daqi"]) if "daqi" in doc else None,
        limits=limits,
        congestion=_congestion(doc["congestion"]) if "congestion" in doc else None,
        silent_after_s=(float(_need(silent, "[silent]", "after_s", (int, float)))
                        if silent else None),
        stuck_samples=_need(stuck, "[stuck]", "samples", int) if stuck else None,
        stuck_fields=tuple(_need(stuck, "[stuck]", "fields", list)) if stuck else (),
    )


def load_rules(path: str | Path | None = None) -> Rules:
    """Load and validate a rules file (the packaged defaults when ``path`` is None)."""
    try:
        if path:
            text = Path(path).read_text("utf-8")
        else:
            text = resources.files("thurrock_streams").joinpath(
                "data/alert_rules.toml").read_text("utf-8")
        doc = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"alert rules {path or '(defaults)'}: {exc}") from exc
    return parse_rules(doc)
