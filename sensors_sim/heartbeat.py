"""Heartbeats: ``{"site_id", "ts", "heartbeat": true}`` (CONTRACT.md §2-3).

A heartbeat says "this sensor has sent everything it stamped before ``ts``". The processor
raises the site's watermark to ``ts`` (so the windows it closes are written at once) and
counts it apart from the readings. The simulator sends them

- live (``run``) and, on request, in generated files: one per site at every multiple of
  the heartbeat interval (epoch-aligned, so every 60 s "on the minute"), after every
  reading of that site stamped before it (:meth:`sensors_sim.feed.SiteMessages.beats`);
- at the end of a replay: one per site, stamped past its last window
  (:func:`closing_ts`), so the processor closes every window of the feed at once.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["LAST_WINDOW_S", "beat_times", "closing_ts", "heartbeat_value", "is_heartbeat"]

F64 = NDArray[np.float64]
#: The longest window of each topic, seconds (CONTRACT.md §4: traffic 1 min and 15 min;
#: §5: air 15 min and 1 h, the running 8-h and 24-h means written at the 1-h window's end).
#: Windows are epoch-aligned and each length divides the longest, so once the longest
#: window holding a site's last reading has closed, every window of the site has.
LAST_WINDOW_S: dict[str, float] = {"traffic.readings": 900.0, "air.readings": 3600.0}


def heartbeat_value(site_id: str, ts: float) -> dict[str, object]:
    """Return the JSON value of a heartbeat (keys in the contract's order).

    >>> heartbeat_value("A13-STIFFORD-EB", 1717372860.0)
    {'site_id': 'A13-STIFFORD-EB', 'ts': 1717372860.0, 'heartbeat': True}
    """
    return {"site_id": site_id, "ts": ts, "heartbeat": True}


def is_heartbeat(value: object) -> bool:
    """Return True when a message value is a heartbeat (``"heartbeat": true``).

    >>> is_heartbeat({"site_id": "S", "ts": 1.0, "heartbeat": True}), is_heartbeat({"ts": 1})
    (True, False)
    """
    return isinstance(value, dict) and value.get("heartbeat") is True


def beat_times(start: float, end: float, every_s: float) -> F64:
    """Return the multiples of ``every_s`` in ``(start, end]``, epoch seconds (ms precision).

    >>> beat_times(30.0, 200.0, 60.0).tolist()
    [60.0, 120.0, 180.0]
    >>> beat_times(60.0, 120.0, 60.0).tolist()
    [120.0]
    """
    if not every_s > 0 or not end > start:
        return np.zeros(0)
    first = math.floor(start / every_s) + 1
    last = math.floor(end / every_s)
    return np.round(np.arange(first, last + 1, dtype=np.float64) * every_s, 3)


def closing_ts(last_ts: float, topic: str, lateness_s: float) -> float:
    """Return the ``ts`` of a feed's closing heartbeat for a site whose latest reading is
    stamped ``last_ts``: the end of the longest window holding that reading, plus the
    allowed lateness (a window closes once the watermark reaches end + lateness, CONTRACT.md
    §3).

    >>> closing_ts(1717373399.5, "traffic.readings", 30.0)  # 00:09:59.5 -> 00:15 + 30 s
    1717373730.0
    >>> closing_ts(1717373400.0, "air.readings", 30.0)  # 00:10 -> 01:00 + 30 s
    1717376430.0
    """
    w = LAST_WINDOW_S[topic]
    return round((math.floor(last_ts / w) + 1) * w + lateness_s, 3)
