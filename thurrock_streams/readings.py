"""Decode and validate readings (CONTRACT.md §2) a whole batch of messages at a time.

A message value is one reading object or a frame of one site's readings in columns.
Every message is parsed once; the rows of all messages in a batch are then gathered into
columns and checked with vectorised numpy masks, so a frame costs little more than its
bytes. Rows that break a rule come back as :class:`Rejected` with the dead-letter reason:

- ``decode``: the bytes are not UTF-8 JSON (or the message is empty);
- ``schema``: not an object, a missing or mistyped field, a bad site_id, unequal frame
  columns, a class outside the closed set, an air sample with no pollutant;
- ``range``: a number outside its range, NaN or infinity, an integer beyond a float.

Event-time rules (``future``, ``late``) are applied afterwards by the window engine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

import numpy as np
import orjson
from numpy.typing import NDArray

__all__ = [
    "AIR_FIELDS",
    "POLLUTANT_FIELDS",
    "TRAFFIC_CLASSES",
    "Batch",
    "Heartbeat",
    "Kind",
    "RawMessage",
    "Rejected",
    "decode_batch",
]

Kind = Literal["traffic", "air"]

#: Vehicle classes (CONTRACT.md §2), in code order: the int8 code is the list index.
TRAFFIC_CLASSES: tuple[str, ...] = ("car", "lgv", "hgv", "bus", "motorcycle", "other")
_CLASS_CODE = {name: i for i, name in enumerate(TRAFFIC_CLASSES)}
_CLASS_CODE_OR_NONE: dict[str | None, int] = {None: -1}
_CLASS_CODE_OR_NONE.update(_CLASS_CODE)

#: Pollutant fields of an air sample and their pollutant tag (CONTRACT.md §2, §5).
POLLUTANT_FIELDS: dict[str, str] = {
    "no2_ugm3": "no2", "o3_ugm3": "o3", "so2_ugm3": "so2",
    "pm25_ugm3": "pm25", "pm10_ugm3": "pm10", "co_mgm3": "co",
}
MAX_SITE_ID_LEN = 64


@dataclass(frozen=True)
class _Num:
    """A numeric field: inclusive bounds unless ``lo_open``; ``integer`` for int fields."""

    name: str
    lo: float
    hi: float
    required: bool = False
    lo_open: bool = False
    integer: bool = False
    unit: str = ""


TRAFFIC_FIELDS: tuple[_Num, ...] = (
    _Num("lane", 1, 8, required=True, integer=True),
    _Num("speed_kph", 0, 250, required=True, unit="km/h"),
    _Num("length_m", 0, 30, lo_open=True, unit="m"),
)
AIR_FIELDS: tuple[_Num, ...] = (
    *(_Num(f, 0, 5000, unit="µg/m³") for f in POLLUTANT_FIELDS if f != "co_mgm3"),
    _Num("co_mgm3", 0, 200, unit="mg/m³"),
    _Num("temperature_c", -50, 60, unit="°C"),
    _Num("humidity_pct", 0, 100, unit="%"),
)


class RawMessage(NamedTuple):
    """One consumed Kafka record as the processor saw it (a named tuple: a worker makes
    one per message, ≈ 0.3 µs against a frozen dataclass's 1.5)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    forwarded: bool = False
    """True when re-keyed by the processor: topic/partition/offset are then the original's."""


@dataclass(frozen=True)
class Rejected:
    """A reading (or a whole message when ``row`` is None) that goes to the dead letters."""

    msg: int
    row: int | None
    reason: str
    detail: str
    site: str | None = None
    """The message's site_id when it has a valid one."""
    heartbeat: bool = False
    """True for a heartbeat message (it is counted apart from readings)."""


@dataclass(frozen=True)
class Heartbeat:
    """A valid heartbeat message (CONTRACT.md §3): everything before ``ts`` was sent."""

    msg: int
    site: str
    ts: float


@dataclass
class Batch:
    """The accepted rows of a batch of messages, in columns, in arrival order.

    ``site`` holds each row's site_id; ``msg`` the index of its message in the batch;
    ``row`` its frame row index (-1 for a single reading); ``ts`` UTC epoch seconds.
    Missing optional numbers are NaN; a missing traffic class is -1.
    """

    site: NDArray[np.object_]
    msg: NDArray[np.int64]
    row: NDArray[np.int64]
    ts: NDArray[np.float64]
    cols: dict[str, NDArray[Any]]
    rejected: list[Rejected] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: NDArray[Any]) -> Batch:
        """Return the rows at ``index`` (an index array or boolean mask), no rejections."""
        return Batch(self.site[index], self.msg[index], self.row[index], self.ts[index],
                     {k: v[index] for k, v in self.cols.items()})


#: Digits beyond which an integer is past float64 (about 1.8e308) whatever its value.
_FLOAT_DIGITS = 310


def _json_int(text: str) -> int | float:
    """An integer literal of the fallback parser: a Python int when a float can hold it,
    else signed infinity, so that the range check dead-letters its row alone. (Python's
    own ``int(text)`` refuses more than 4300 digits, which would fail the whole message.)
    """
    if len(text) < 20:  # within int64: the common case
        return int(text)
    if len(text) <= _FLOAT_DIGITS:
        v = int(text)
        try:
            float(v)
        except OverflowError:
            pass
        else:
            return v
    return -math.inf if text.startswith("-") else math.inf


def _loads(value: bytes) -> Any:
    """Parse JSON; raise ValueError (or UnicodeDecodeError) for what cannot be read."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        # Python's parser also reads NaN/Infinity literals and numbers beyond a float,
        # so such a row can be dead-lettered alone (reason ``range``) instead of its
        # whole frame. orjson stops at 1024 levels of nesting; Python's parser then
        # raises RecursionError, which is a message that cannot be read, not a crash.
        try:
            return json.loads(value.decode("utf-8"), parse_int=_json_int)
        except RecursionError:
            raise ValueError("nested too deeply") from None


def _site_error(site: Any) -> str | None:
    if not isinstance(site, str) or not site:
        return "site_id must be a non-empty string"
    if len(site) > MAX_SITE_ID_LEN:
        return f"site_id longer than {MAX_SITE_ID_LEN} characters"
    if not site.isprintable():
        return "site_id holds control or non-printable characters"
    return None


def _parse_ts(v: Any) -> float | None:
    """Return epoch seconds for a number or an ISO-8601 string with an offset, else None."""
    t = type(v)
    if t is float or t is int:
        return _float(v)  # an int beyond a float is infinite: out of range, not mistyped
    if t is str:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return None
        return dt.timestamp() if dt.tzinfo is not None else None
    return None


class _Gather:
    """Collects the rows of many messages into per-field Python lists."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        # Per run of rows (a single reading, or a frame's rows): its site, message, row
        # count and whether it is a frame; :meth:`finish` makes them one entry per row.
        self.runs_site: list[str] = []
        self.runs_msg: list[int] = []
        self.runs_n: list[int] = []
        self.runs_frame: list[bool] = []
        self.site: NDArray[np.object_] = np.empty(0, dtype=object)
        self.msg: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.row: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.cols: dict[str, list[Any]] = {n: [] for n in names}
        self.rejected: list[Rejected] = []
        self.heartbeats: list[Heartbeat] = []

    def add_heartbeat(self, i: int, obj: dict[str, Any], site: str) -> None:
        def reject(reason: str, detail: str) -> None:
            self.rejected.append(Rejected(i, None, reason, detail, site, heartbeat=True))

        if obj["heartbeat"] is not True:
            return reject("schema", "heartbeat must be true")
        extra = sorted(set(obj) - _HEARTBEAT_KEYS)
        if extra:
            return reject("schema", f"a heartbeat carries no reading fields: {extra}"[:300])
        v = obj.get("ts")
        try:
            ts = None if v is None else _parse_ts(v)
        except OverflowError:
            return reject("range", "ts is not finite")
        if ts is None:
            return reject("schema", "ts must be epoch seconds or an ISO-8601 string with an "
                          "offset")
        if not math.isfinite(ts):
            return reject("range", "ts is not finite")
        self.heartbeats.append(Heartbeat(i, site, ts))

    def add_reading(self, i: int, obj: dict[str, Any], site: str) -> None:
        self.runs_site.append(site)
        self.runs_msg.append(i)
        self.runs_n.append(1)
        self.runs_frame.append(False)
        for name, col in self.cols.items():
            col.append(obj.get(name))

    def add_frame(self, i: int, site: str, columns: Any) -> None:
        if not isinstance(columns, dict) or "ts" not in columns:
            self.rejected.append(Rejected(i, None, "schema", "frame 'columns' must be an "
                                          "object of equal-length arrays including 'ts'", site))
            return
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in columns.items()}
        n = lengths["ts"]
        if n < 0 or any(length != n for length in lengths.values()):
            self.rejected.append(Rejected(
                i, None, "schema", f"frame columns must be arrays of one length: {lengths}", site))
            return
        self.runs_site.append(site)
        self.runs_msg.append(i)
        self.runs_n.append(n)
        self.runs_frame.append(True)
        for name, col in self.cols.items():
            values = columns.get(name)
            col.extend(values if values is not None else [None] * n)

    def finish(self) -> None:
        """Each row's site, message index and frame row (-1 for a single reading), as
        arrays: a few numpy calls for the whole batch instead of three list items a row."""
        counts = np.asarray(self.runs_n, dtype=np.int64)
        sites = np.empty(len(self.runs_site), dtype=object)
        sites[:] = self.runs_site
        self.site = np.repeat(sites, counts)
        self.msg = np.repeat(np.asarray(self.runs_msg, dtype=np.int64), counts)
        starts = np.cumsum(counts) - counts
        row = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
        self.row = np.where(np.repeat(np.asarray(self.runs_frame, dtype=np.bool_), counts),
                            row, -1)


def _gather(kind: Kind, messages: Sequence[RawMessage]) -> _Gather:
    names = ["ts", *(f.name for f in (TRAFFIC_FIELDS if kind == "traffic" else AIR_FIELDS))]
    if kind == "traffic":
        names.append("class")
    g = _Gather(names)
    for i, m in enumerate(messages):
        if not m.value:
            g.rejected.append(Rejected(i, None, "decode", "empty message value"))
            continue
        try:
            obj = _loads(m.value)
        except (ValueError, UnicodeDecodeError) as exc:
            g.rejected.append(Rejected(i, None, "decode", f"not UTF-8 JSON: {exc}"[:300]))
            continue
        if not isinstance(obj, dict):
            g.rejected.append(Rejected(i, None, "schema", "a reading must be a JSON object"))
            continue
        site = obj.get("site_id")
        problem = _site_error(site)
        if problem is not None or not isinstance(site, str):
            g.rejected.append(Rejected(i, None, "schema", problem or "bad site_id"))
        elif "heartbeat" in obj:
            g.add_heartbeat(i, obj, site)
        elif "columns" in obj:
            g.add_frame(i, site, obj["columns"])
        else:
            g.add_reading(i, obj, site)
    return g


_HEARTBEAT_KEYS = frozenset({"site_id", "ts", "heartbeat"})
_NUMBER_TYPES = frozenset({float, int})
_NONE_TYPE = frozenset({type(None)})


def _numeric(values: list[Any]) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Return (values as float64 with NaN where absent, present mask, mistyped mask).

    Fast paths, without a Python step per value: every value a number (``type`` is
    exact, so booleans take the slow path), converted by numpy at once; or every value
    null. Anything else (mixed, mistyped) goes value by value.
    """
    n = len(values)
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        with suppress(OverflowError):  # an int beyond a float: value by value, below
            return (np.fromiter(values, dtype=np.float64, count=n), np.ones(n, dtype=np.bool_),
                    np.zeros(n, dtype=np.bool_))
    elif types <= _NONE_TYPE:  # an optional column nobody sent
        return np.full(n, np.nan), np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)
    kinds = np.fromiter(
        (0 if v is None else 1 if (type(v) is float or type(v) is int) else 2 for v in values),
        dtype=np.int8, count=len(values))
    arr = np.array([_float(v) if type(v) is float or type(v) is int else np.nan
                    for v in values], dtype=np.float64)
    return arr, kinds == 1, kinds == 2


def _float(v: float) -> float:
    """``float(v)``, with signed infinity for an int beyond a float (out of range)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _check(kind: Kind, g: _Gather) -> tuple[NDArray[np.int8], list[str], dict[str, NDArray[Any]]]:
    """Vectorised row checks: (reason code per row, reason names, cleaned columns)."""
    n = len(g.msg)
    reason = np.zeros(n, dtype=np.int8)  # 0 ok, 1 schema, 2 range
    detail: list[str] = [""] * n
    cols: dict[str, NDArray[Any]] = {}

    def flag(mask: NDArray[np.bool_], code: int, text: str) -> None:
        if not mask.any():  # the usual case: one pass over the mask, nothing to mark
            return
        new = mask & (reason == 0)
        for j in np.flatnonzero(new):
            detail[j] = text
        reason[new] = code

    raw_ts = g.cols["ts"]
    ts: NDArray[np.float64] | None = None
    missing_ts = unreadable = np.zeros(n, dtype=np.bool_)
    if set(map(type, raw_ts)) <= _NUMBER_TYPES:  # epoch seconds throughout: no Python loop
        with suppress(OverflowError):  # an int beyond a float: value by value, below
            ts = np.fromiter(raw_ts, dtype=np.float64, count=n)
    if ts is None:
        parsed = list(map(_parse_ts, raw_ts))
        unreadable = np.fromiter((t is None for t in parsed), dtype=np.bool_, count=n)
        ts = np.array([np.nan if t is None else t for t in parsed], dtype=np.float64)
        missing_ts = np.fromiter((v is None for v in raw_ts), dtype=np.bool_, count=n)
    flag(missing_ts, 1, "ts is missing")
    flag(unreadable, 1, "ts must be epoch seconds or an ISO-8601 string with an offset")
    flag(~np.isfinite(ts), 2, "ts is NaN, infinite or too large for a float")
    cols["ts"] = ts
    fields = TRAFFIC_FIELDS if kind == "traffic" else AIR_FIELDS
    for f in fields:
        arr, present, mistyped = _numeric(g.cols[f.name])
        flag(mistyped, 1, f"{f.name} must be a number")
        if f.integer:
            with np.errstate(invalid="ignore"):  # NaN and infinity: range, below
                fraction = np.isfinite(arr) & (arr != np.floor(arr))
            flag(present & fraction, 1, f"{f.name} must be a whole number")
        if f.required:
            flag(~present & ~mistyped, 1, f"{f.name} is missing")
        with np.errstate(invalid="ignore"):
            low_bad = arr <= f.lo if f.lo_open else arr < f.lo
            out = present & (low_bad | (arr > f.hi) | ~np.isfinite(arr))
        bound = f"({f.lo:g}, {f.hi:g}]" if f.lo_open else f"[{f.lo:g}, {f.hi:g}]"
        flag(out, 2, f"{f.name} outside {bound} {f.unit}".rstrip())
        cols[f.name] = arr
    if kind == "traffic":
        raw = g.cols["class"]
        try:  # every value a known class or null: one dict lookup per value, in C
            code = np.fromiter(map(_CLASS_CODE_OR_NONE.__getitem__, raw), dtype=np.int8,
                               count=n)
        except (KeyError, TypeError):  # an unknown or unhashable value: value by value
            code = np.array([_CLASS_CODE.get(v, -2) if type(v) is str
                             else (-1 if v is None else -2) for v in raw], dtype=np.int8)
        flag(code == -2, 1, f"class must be one of {', '.join(TRAFFIC_CLASSES)}")
        cols["class"] = code
        # Rejected rows may hold any number: only accepted ones (1..8) reach the cast.
        cols["lane"] = np.where(reason == 0, cols["lane"], 0).astype(np.int8)
    else:
        any_pollutant = np.zeros(n, dtype=np.bool_)
        for name in POLLUTANT_FIELDS:
            any_pollutant |= ~np.isnan(cols[name])
        flag(~any_pollutant, 1, "an air sample needs at least one pollutant")
    g_detail = detail
    g.rejected.extend(
        Rejected(int(g.msg[j]), int(g.row[j]) if g.row[j] >= 0 else None,
                 "schema" if reason[j] == 1 else "range", g_detail[j], g.site[j])
        for j in np.flatnonzero(reason)
    )
    return reason, g_detail, cols


def decode_batch(kind: Kind, messages: Sequence[RawMessage]) -> Batch:
    """Decode and validate a batch of messages of one kind; return accepted rows and rejects.

    >>> m = RawMessage("traffic.readings", 0, 7, b"A13", b'{"site_id": "A13", "ts": 60,'
    ...                b' "lane": 1, "speed_kph": 300}')
    >>> b = decode_batch("traffic", [m])
    >>> len(b), b.rejected[0].reason
    (0, 'range')
    """
    g = _gather(kind, messages)
    g.finish()
    reason, _, cols = _check(kind, g)
    batch = Batch(site=g.site, msg=g.msg, row=g.row, ts=cols.pop("ts"), cols=cols)
    if reason.any():
        batch = batch.take(reason == 0)
    batch.rejected = g.rejected
    batch.heartbeats = g.heartbeats
    return batch
