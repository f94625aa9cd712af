"""Replay feed lines to a sink: as fast as possible, at N x real time, or rebased to now.

The lines come from a JSONL feed (or an expanded WebTRIS CSV). Pacing follows event time:
message i waits until (t_i - t_0) / N seconds after the start, where t_i is the earliest
reading time in the message; a time further ahead than the next message's is ignored, so
one broken clock cannot stall the replay.

Unless told not to (``closing=None``), a replay that reaches the end of its lines ends each
site's feed with a heartbeat (:mod:`sensors_sim.heartbeat`) stamped at the end of the
longest window holding the site's latest reading plus the allowed lateness, so the
processor closes and writes every window of the feed at once instead of waiting for its
clock. A heartbeat is a promise about the past, so one is never stamped ahead of the wall
clock that sends it: for a feed that ends near now (``--rebase-now``) it is held at now,
and the windows still open then close as the processor's clock passes them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .clock import parse_instant
from .errors import InputFormatError, UsageError
from .heartbeat import LAST_WINDOW_S, closing_ts, heartbeat_value, is_heartbeat
from .publish import Sink, message_from_line

__all__ = ["Closing", "Pacer", "ReplayStats", "file_anchor", "message_time", "read_jsonl",
           "replay", "shift_value"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the parsed lines of a JSONL feed; InputFormatError names a bad line."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputFormatError(f"{path}: {exc.strerror}") from None
    with fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputFormatError(f"not JSON ({exc})", n) from None
            if not (isinstance(obj, dict) and "topic" in obj
                    and ("value" in obj or "value_b64" in obj)):
                raise InputFormatError('expected {"topic", "key", "value" | "value_b64"}', n)
            yield obj


def _times(value: Any) -> list[float]:
    """Event times (epoch s) in a reading or frame; unreadable ones are skipped."""
    if not isinstance(value, dict):
        return []
    cols = value.get("columns")
    raw = cols.get("ts") if isinstance(cols, dict) else [value.get("ts")]
    out = []
    for t in raw if isinstance(raw, list) else []:
        if isinstance(t, int | float) and not isinstance(t, bool):
            out.append(float(t))
        elif isinstance(t, str):
            try:
                out.append(parse_instant(t))
            except UsageError:
                continue
    return out


def message_time(obj: dict[str, Any]) -> float | None:
    """Return the earliest event time in a line's value, or None when it has none.

    >>> message_time({"topic": "t", "value": {"site_id": "S", "columns": {"ts": [5.0, 3.0]}}})
    3.0
    """
    times = _times(obj.get("value"))
    return min(times) if times else None


def _shift(t: Any, offset: float) -> Any:
    if isinstance(t, int | float) and not isinstance(t, bool):
        return round(t + offset, 3)
    if isinstance(t, str):
        try:
            return round(parse_instant(t) + offset, 3)
        except UsageError:
            return t
    return t


def shift_value(value: Any, offset: float) -> Any:
    """Return the value with every readable ``ts`` moved by ``offset`` seconds (ms precision).

    ISO-8601 strings become epoch seconds; anything unreadable is left as it is.

    >>> shift_value({"site_id": "S", "ts": 10.0}, 2.5)
    {'site_id': 'S', 'ts': 12.5}
    """
    if not isinstance(value, dict):
        return value
    cols = value.get("columns")
    if isinstance(cols, dict) and isinstance(cols.get("ts"), list):
        return {**value, "columns": {**cols, "ts": [_shift(t, offset) for t in cols["ts"]]}}
    if "ts" in value:
        return {**value, "ts": _shift(value["ts"], offset)}
    return value


def file_anchor(path: Path, lines: Iterable[dict[str, Any]]) -> float:
    """Return the instant that ``--rebase-now`` moves to now.

    That is the simulated end from the summary file next to a generated feed, else the
    latest event time in the lines.
    """
    summary = path.with_name(path.name + ".summary.json")
    if summary.exists():
        try:
            return parse_instant(str(orjson.loads(summary.read_bytes())["end"]))
        except (orjson.JSONDecodeError, KeyError, UsageError):
            pass
    latest = max((t for obj in lines for t in _times(obj.get("value"))), default=None)
    if latest is None:
        raise InputFormatError(f"{path}: no readable event time to rebase on")
    return latest


class Pacer:
    """Waits so that event time advances ``speed`` times faster than wall-clock time."""

    def __init__(self, speed: float | None, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        self.speed, self._clock, self._sleep = speed, clock, sleep
        self._t0: float | None = None
        self._wall0 = 0.0
        self._latest = float("-inf")

    def wait(self, event_time: float | None) -> None:
        """Block until the message stamped ``event_time`` is due (None: send at once)."""
        if self.speed is None or event_time is None:
            return
        if self._t0 is None:
            self._t0, self._wall0 = event_time, self._clock()
        self._latest = max(self._latest, event_time)
        due = self._wall0 + (self._latest - self._t0) / self.speed
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)


@dataclass(frozen=True)
class Closing:
    """How a replay ends each site's feed: with a heartbeat past its last window."""

    lateness_s: float = 30.0
    """The processor's ``ALLOWED_LATENESS_S``: added to the last window's end."""
    max_skew_s: float = 300.0
    """The processor's ``MAX_CLOCK_SKEW_S``: a reading stamped further ahead of the clock
    is dead-lettered ``future``, so it moves no window and is not waited for."""

    def __post_init__(self) -> None:
        if not 0 <= self.lateness_s < float("inf"):
            raise UsageError("--lateness must be a number of seconds >= 0")


@dataclass
class ReplayStats:
    """Counts of what a replay sent."""

    messages: int = 0
    """Every message: readings, frames and heartbeats."""
    readings: int = 0
    """Readings (a frame counts its rows); heartbeats are not readings."""
    heartbeats: int = 0
    """Heartbeats: those in the file and the closing ones."""
    closing: int = 0
    """Closing heartbeats, one per site at most."""
    held: int = 0
    """Closing heartbeats held at the wall clock (their last window ends in the future)."""
    topics: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    _latest: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    """(topic, site_id) -> latest ts sent: of a reading that is not ``future``."""
    _beaten: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    """(topic, site_id) -> latest heartbeat ts sent."""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _readings(obj: dict[str, Any]) -> int:
    value = obj.get("value")
    if isinstance(value, dict) and isinstance(value.get("columns"), dict):
        ts = value["columns"].get("ts")
        return len(ts) if isinstance(ts, list) else 1
    return 1


def replay(lines: Iterable[dict[str, Any]], sink: Sink, *, speed: float | None = None,
           offset: float = 0.0, pacer: Pacer | None = None,
           progress: Callable[[int], None] | None = None,
           clock: Clock = time.monotonic, stop: Callable[[], bool] = lambda: False,
           closing: Closing | None = None, now: Clock = time.time) -> ReplayStats:
    """Send every line to ``sink`` in file order, ts moved by ``offset``, paced at ``speed``;
    then, with ``closing``, one closing heartbeat per site (``now`` is the wall clock).

    Stops early, between two messages, once ``stop()`` returns True; a stopped replay sends
    no closing heartbeat (the feed did not end).
    """
    pacer = pacer or Pacer(speed, clock)
    stats = ReplayStats()
    wall0 = clock()
    prev: dict[str, Any] | None = None
    prev_t: float | None = None
    stopped = False
    for obj in _with_end(iter(lines)):
        t = message_time(obj) if obj is not None else None
        if stop():
            stopped = True
            break
        if prev is not None:
            pace = prev_t if t is None or prev_t is None else min(prev_t, t)
            pacer.wait(None if pace is None else pace + offset)
            _send(prev, sink, offset, stats, closing, now)
            if progress:
                progress(1)
        prev, prev_t = obj, t
    if closing is not None and not stopped:
        _close(sink, stats, closing, now)
    stats.elapsed_s = clock() - wall0
    return stats


def _close(sink: Sink, stats: ReplayStats, closing: Closing, now: Clock) -> None:
    """Send each site's closing heartbeat, in (topic, site_id) order."""
    for (topic, site), last in sorted(stats._latest.items()):
        ts = closing_ts(last, topic, closing.lateness_s)
        cap = round(now(), 3)
        held = ts > cap
        ts = min(ts, cap)
        if ts <= max(last, stats._beaten.get((topic, site), -math.inf)):
            continue  # it would tell the processor nothing
        sink.send(topic, site, orjson.dumps(heartbeat_value(site, ts)))
        stats.messages += 1
        stats.heartbeats += 1
        stats.closing += 1
        stats.held += held
        stats.topics[topic] = stats.topics.get(topic, 0) + 1


def _with_end(lines: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any] | None]:
    yield from lines
    yield None


def _send(obj: dict[str, Any], sink: Sink, offset: float, stats: ReplayStats,
          closing: Closing | None, now: Clock) -> None:
    if offset and "value" in obj:
        obj = {**obj, "value": shift_value(obj["value"], offset)}
    topic, key, value = message_from_line(obj)
    sink.send(topic, key, value)
    stats.messages += 1
    stats.topics[topic] = stats.topics.get(topic, 0) + 1
    beat = is_heartbeat(obj.get("value"))
    if beat:
        stats.heartbeats += 1
    else:
        stats.readings += _readings(obj)
    site = obj["value"].get("site_id") if isinstance(obj.get("value"), dict) else None
    if closing is None or topic not in LAST_WINDOW_S or not isinstance(site, str):
        return
    times = _times(obj["value"])
    if not times:
        return
    where = (topic, site)
    if beat:
        stats._beaten[where] = max(stats._beaten.get(where, -math.inf), *times)
        return
    horizon = now() + closing.max_skew_s
    ok = [t for t in times if t <= horizon]
    if ok:
        stats._latest[where] = max(stats._latest.get(where, -math.inf), *ok)
