"""Time helpers: UK local time for demand profiles, durations and ISO-8601 instants.

UK civil time is GMT in winter and BST (GMT+1) from 01:00 UTC on the last Sunday of March
to 01:00 UTC on the last Sunday of October. The rule is coded here, so the simulator needs
no time-zone database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from .errors import UsageError

__all__ = [
    "DAY_S",
    "format_instant",
    "parse_duration",
    "parse_instant",
    "uk_offset_s",
]

DAY_S = 86_400
_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def _last_sunday_utc(year: int, month: int) -> float:
    """Epoch seconds of 01:00 UTC on the last Sunday of the month."""
    nxt = datetime(year + (month == 12), month % 12 + 1, 1, 1, tzinfo=UTC)
    last = nxt - timedelta(days=1)
    return (last - timedelta(days=(last.weekday() + 1) % 7)).timestamp()


def uk_offset_s(ts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return the UK civil-time offset from UTC (0 or 3600 s) at each epoch second.

    >>> uk_offset_s(np.array([1_717_200_000.0, 1_704_067_200.0])).tolist()
    [3600.0, 0.0]
    """
    out = np.zeros(ts.shape)
    if ts.size == 0:
        return out
    years = range(datetime.fromtimestamp(float(ts.min()), UTC).year,
                  datetime.fromtimestamp(float(ts.max()), UTC).year + 1)
    for year in years:
        start, end = _last_sunday_utc(year, 3), _last_sunday_utc(year, 10)
        out[(ts >= start) & (ts < end)] = 3600.0
    return out


def parse_duration(text: str) -> float:
    """Parse a duration such as ``24h``, ``90m``, ``1h30m``, ``2d`` or ``3600`` into seconds.

    >>> parse_duration("1h30m"), parse_duration("45"), parse_duration("0.5d")
    (5400.0, 45.0, 43200.0)
    """
    raw = text.strip().lower().replace(" ", "")
    try:
        seconds = float(raw)
    except ValueError:
        parts = _DURATION.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise UsageError(f"duration {text!r}: use a number of seconds or e.g. 24h, 90m, "
                             "1h30m, 2d") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"duration {text!r} must be positive")
    return seconds


def parse_instant(text: str) -> float:
    """Parse an ISO-8601 instant into epoch seconds; a missing offset means UTC.

    >>> parse_instant("2024-06-03T00:00:00Z"), parse_instant("2024-06-03T01:00:00+01:00")
    (1717372800.0, 1717372800.0)
    """
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO-8601 date-time "
                         "(e.g. 2024-06-03T00:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_instant(ts: float) -> str:
    """Format epoch seconds as an ISO-8601 UTC instant with a ``Z`` suffix.

    >>> format_instant(1717372800.0)
    '2024-06-03T00:00:00Z'
    """
    when = datetime.fromtimestamp(ts, UTC)
    text = when.isoformat(timespec="milliseconds" if when.microsecond else "seconds")
    return text.replace("+00:00", "Z")
