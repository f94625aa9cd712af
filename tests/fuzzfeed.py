"""A seeded generator of hostile readings messages, and what each must come to.

Used by the fuzz tests (tests/unit/test_fuzz.py, ``make fuzz``) and the fuzz run on the
real stack (tests/integration/test_fuzz_stack.py). Every message comes with its *slots*:
the readings it counts as (CONTRACT.md §2: a message that cannot be read at all is one
reading, every frame row is one reading, an empty frame none) and, for each slot, what
may become of it. That expectation is worked out here from the contract's rules while the
message is built, never by asking the code under test.

A slot carries ``dec``: the dead-letter reasons the decoder may give it (empty: a valid
reading), and ``future``: a valid reading stamped beyond the clock skew. At the processor
a valid reading is accepted or dead-lettered ``late`` (or must be ``future``).

Valid timestamps stay in a two-hour band before the processor's clock: a site whose first
reading is decades before its next one would have every window between them written
(CONTRACT.md §3), millions of them (see the fuzz notes in docs/testing.md).
"""

from __future__ import annotations

import base64
import json
import math
import random
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from thurrock_streams.engine.processor import MAX_DEAD_VALUE, MAX_REPEATED_VALUE

KINDS = ("traffic", "air")


@dataclass(frozen=True)
class F:
    """A numeric field's rule, from CONTRACT.md §2 (written here, not read from the code)."""

    name: str
    lo: int
    hi: int
    required: bool = False
    lo_open: bool = False
    integer: bool = False


TRAFFIC_FIELDS = (F("lane", 1, 8, required=True, integer=True),
                  F("speed_kph", 0, 250, required=True), F("length_m", 0, 30, lo_open=True))
TRAFFIC_CLASSES = ("car", "lgv", "hgv", "bus", "motorcycle", "other")
POLLUTANT_FIELDS = ("no2_ugm3", "o3_ugm3", "so2_ugm3", "pm25_ugm3", "pm10_ugm3", "co_mgm3")
AIR_FIELDS = (*(F(n, 0, 5000) for n in POLLUTANT_FIELDS[:5]), F("co_mgm3", 0, 200),
              F("temperature_c", -50, 60), F("humidity_pct", 0, 100))
REASONS = frozenset({"decode", "schema", "range", "future", "late"})
#: The processor's clock in the in-process runs, and the band of valid timestamps.
NOW = 1_800_000_000.0
BAND_S = 7200.0
SKEW_S = 300.0
LATENESS_S = 30.0

DEC = frozenset[str]
OK: DEC = frozenset()
SCHEMA: DEC = frozenset({"schema"})
RANGE: DEC = frozenset({"range"})
DECODE: DEC = frozenset({"decode"})


class Raw:
    """JSON text written as is (NaN literals, 5000-digit numbers, lone surrogates...)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Pairs:
    """A JSON object written from (key, value) pairs, so keys may repeat (last one wins)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = items


def enc(v: Any) -> str:
    """JSON text of ``v`` (with :class:`Raw` and :class:`Pairs`; floats as Python's json)."""
    t = type(v)
    if t is str:
        return json.dumps(v)
    if t is float:
        if v != v:
            return "NaN"
        if v in (math.inf, -math.inf):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if v is None:
        return "null"
    if t is list:
        return "[" + ",".join(map(enc, v)) + "]"
    if t is dict:
        return "{" + ",".join(json.dumps(k) + ":" + enc(x) for k, x in v.items()) + "}"
    if t is Pairs:
        return "{" + ",".join(json.dumps(k) + ":" + enc(x) for k, x in v.items) + "}"
    if t is Raw:
        return str(v.text)
    raise TypeError(t)


@dataclass(frozen=True)
class Slot:
    """One reading of a message: its frame row (None for a whole message) and fate."""

    row: int | None
    dec: DEC
    future: bool = False

    def allowed(self) -> DEC:
        """The dead-letter reasons the processor may give it; 'ok' means accepted."""
        if self.dec:
            return self.dec
        return frozenset({"future"}) if self.future else frozenset({"ok", "late"})


@dataclass
class Message:
    """A generated message: key, value bytes, kind of its topic, and its slots."""

    kind: str
    key: bytes | None
    value: bytes | None
    slots: list[Slot]
    site: str | None = None
    """The site_id it is read as, when valid (for routing by partition)."""
    what: str = ""
    heartbeat: DEC | None = None
    """For a heartbeat (no reading, CONTRACT.md §3): its dead-letter reasons (empty: valid)."""
    hb_future: bool = False

    def hb_allowed(self) -> DEC:
        """What may become of a heartbeat: applied ('ok') or dead-lettered."""
        assert self.heartbeat is not None
        if self.heartbeat:
            return self.heartbeat
        return frozenset({"future"}) if self.hb_future else frozenset({"ok"})


# -- sites --------------------------------------------------------------------------------

_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)] + list("éßøΩжא中文🚗€ñ")


def hostile_sites(rng: random.Random, n: int, tag: str) -> list[str]:
    """``n`` valid site_ids full of line-protocol and JSON specials, up to 64 characters."""
    fixed = [f'{tag} A13 EB, "Stifford"=J30', f"{tag}a\\,b", f"{tag}end\\", f"{tag}=,= \"'",
             f"{tag}中文-🚗", (f"{tag}-" + "x" * 64)[:64], f"{tag}\\\\n", f"{tag}{{}}[]"]
    out = fixed[:n]
    while len(out) < n:
        k = rng.randint(1, 40)
        out.append(f"{tag}{len(out)}" + "".join(rng.choice(_PRINTABLE) for _ in range(k)))
    return [s[:64] for s in out]


#: site_id values that make a message unreadable (schema), as JSON text or values.
BAD_SITES: list[Any] = [
    "", "x" * 65, "bad\nid", "tab\there", "nul\x00", "del\x7f", "zw\u200bsp", "\u2028",
    Raw('"lone\\ud800"'), Raw('"\\udfff"'), 7, None, True, ["A13"], {"id": "A13"}, 1.5,
]


# -- field values ---------------------------------------------------------------------------

def _huge_int_text(rng: random.Random) -> Raw:
    digits = rng.choice([20, 40, 309, 310, 400, 1000, 5000])
    sign = "-" if rng.random() < 0.3 else ""
    return Raw(sign + "9" + "".join(rng.choice("0123456789") for _ in range(digits - 1)))


#: Values of the wrong type for a number (schema), booleans first of all.
def _wrong_type(rng: random.Random) -> Any:
    return rng.choice([True, False, "12", "", "NaN", [1], [], {"v": 1}, Raw('"\\ud800"'),
                       [[[[[[[[1]]]]]]]], Raw("[" * 300 + "]" * 300)])


def _number_verdict(f: Any, v: float) -> DEC:
    """The contract's rule for a number in field ``f`` (CONTRACT.md §2)."""
    if v != v or v in (math.inf, -math.inf):
        return RANGE
    low_bad = v <= f.lo if f.lo_open else v < f.lo
    out = RANGE if low_bad or v > f.hi else OK
    if f.integer and v != math.floor(v):
        return SCHEMA | out  # not a whole number (and perhaps out of range as well)
    return out


def field_value(rng: random.Random, f: Any, p_bad: float) -> tuple[Any, DEC, bool]:
    """(value or a sentinel ``MISSING``, its verdict, whether the value counts as present)."""
    r = rng.random()
    if r >= p_bad:  # a valid value
        if not f.required and rng.random() < 0.25:
            return (MISSING if rng.random() < 0.5 else None), OK, False
        if f.integer:
            return rng.randint(int(f.lo), int(f.hi)), OK, True
        u = rng.random()
        if u < 0.05:
            v = f.hi
        elif u < 0.1 and not f.lo_open:
            v = f.lo
        else:
            v = round(f.lo + (f.hi - f.lo) * rng.random(), rng.choice([0, 1, 3, 9]))
            if f.lo_open and v <= f.lo:
                v = f.hi
        return (int(v) if rng.random() < 0.3 and v == int(v) else v), OK, True
    c = rng.randrange(10)
    if c == 0:  # missing or null
        if f.required:
            return (MISSING if rng.random() < 0.5 else None), SCHEMA, False
        return None, OK, False
    if c == 1:
        return _wrong_type(rng), SCHEMA, False
    if c == 2:
        return rng.choice([math.nan, math.inf, -math.inf]), RANGE, True
    if c == 3:
        return _huge_int_text(rng), RANGE, True
    if c == 4:
        return rng.choice([10**19, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**300,
                           -(10**300)]), RANGE, True
    if c == 5:
        return Raw(rng.choice(["1e400", "-1e400", "1E999"])), RANGE, True
    if c == 6:
        return rng.choice([1e300, -1e300, 5e-324, -5e-324, 1.7976931348623157e308]), None, True
    if c == 7 and f.integer:
        return rng.choice([1.5, 2.25, 7.999]), SCHEMA, True
    # just outside the bounds, or far outside
    d = rng.choice([1e-9, 0.01, 1.0, 1e6])
    v = f.lo - d if rng.random() < 0.5 else f.hi + d
    if f.integer:
        v = rng.choice([int(f.lo) - 1, int(f.hi) + 1, -5, 255, 256, 2**31])
    if f.lo_open and rng.random() < 0.5:
        v = f.lo
    return v, None, True


MISSING = object()

_TZS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
        timezone(timedelta(hours=13, minutes=45))]


def ts_value(rng: random.Random, t: float, p_bad: float, now: float) -> tuple[Any, DEC, bool]:
    """(ts value, verdict, future) for a reading meant for time ``t`` (in the band before
    the processor's clock ``now``)."""
    r = rng.random()
    if r >= p_bad:
        u = rng.random()
        if u < 0.1:  # ISO-8601 with an offset, whole seconds
            ti = int(t)
            dt = datetime.fromtimestamp(ti, _TZS[ti % len(_TZS)])
            s = dt.isoformat()
            return (s.replace("+00:00", "Z") if rng.random() < 0.3 else s), OK, False
        if u < 0.2:
            return int(t), OK, False
        return round(t, 3), OK, False
    c = rng.randrange(9)
    if c == 0:
        return (MISSING if rng.random() < 0.5 else None), SCHEMA, False
    if c == 1:  # ISO without an offset, or not a time at all
        return rng.choice([datetime.fromtimestamp(int(t), UTC).replace(tzinfo=None).isoformat(),
                           "yesterday", "", "2026-13-01T00:00:00+00:00",
                           "2026-01-01T00:00:00+24:00", "1e9", "\u0661\u0662"]), SCHEMA, False
    if c == 2:
        return _wrong_type(rng), SCHEMA, False
    if c == 3:
        return rng.choice([math.nan, math.inf, -math.inf]), RANGE, False
    if c == 4:
        return rng.choice([_huge_int_text_big(rng), Raw("1e400"), Raw("-1E999"),
                           10**400, -(10**400)]), RANGE, False
    # in the future: readable, then dead-lettered ``future`` by the processor
    return rng.choice([now + SKEW_S + 100 + rng.random() * 1e7, 1e300, 2**63, 2**64, 10**30,
                       "9999-12-31T23:59:59-23:59", 1.7976931348623157e308]), OK, True


def _huge_int_text_big(rng: random.Random) -> Raw:
    digits = rng.choice([310, 400, 5000])
    return Raw(("-" if rng.random() < 0.5 else "") + "1" + "0" * (digits - 1))


def _class_value(rng: random.Random, p_bad: float) -> tuple[Any, DEC]:
    if rng.random() >= p_bad:
        return (rng.choice(TRAFFIC_CLASSES) if rng.random() < 0.8
                else rng.choice([MISSING, None])), OK
    return rng.choice(["tractor", "CAR", "", "car ", 1, True, ["car"], {"c": "car"},
                       Raw('"\\ud800"'), Raw("NaN")]), SCHEMA


# -- readings ---------------------------------------------------------------------------------

@dataclass
class Row:
    """One generated reading: field name -> value (``MISSING`` left out), and its fate."""

    values: dict[str, Any] = field(default_factory=dict)
    dec: set[str] = field(default_factory=set)
    future: bool = False


def reading_row(rng: random.Random, kind: str, t: float, p_bad: float,
                now: float = NOW) -> Row:
    """One reading's fields with the verdict the contract gives them together."""
    row = Row()
    v, d, fut = ts_value(rng, t, p_bad, now)
    row.values["ts"], row.future = v, fut
    row.dec |= d
    if kind == "traffic":
        for f in TRAFFIC_FIELDS:
            v, d, _ = field_value(rng, f, p_bad)
            row.values[f.name] = v
            row.dec |= d if d is not None else _number_verdict(f, float(v))
        v, d = _class_value(rng, p_bad)
        row.values["class"] = v
        row.dec |= d
    else:
        chosen = [f for f in AIR_FIELDS if f.name in POLLUTANT_FIELDS and rng.random() < 0.4]
        if not chosen and rng.random() > p_bad:
            chosen = [rng.choice([f for f in AIR_FIELDS if f.name in POLLUTANT_FIELDS])]
        present = False
        for f in AIR_FIELDS:
            if f.name in POLLUTANT_FIELDS and f not in chosen:
                if rng.random() < 0.2:
                    row.values[f.name] = None  # "not measured in this sample"
                continue
            v, d, has = field_value(rng, f, p_bad)
            if f.name in POLLUTANT_FIELDS:
                # a mistyped pollutant is a schema error of its own, not a missing one
                present |= has
            row.values[f.name] = v
            row.dec |= d if d is not None else _number_verdict(f, float(v))
        if not present:
            row.dec.add("schema")  # an air sample needs at least one pollutant
    if row.dec:
        row.future = False  # a row that is not read is never judged on time
    return row


def _obj(site: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    d = {"site_id": site}
    d.update((k, v) for k, v in values.items() if v is not MISSING)
    return d


@dataclass
class Generator:
    """Messages for both kinds, from one seed; ``progress`` in [0, 1] moves time on."""

    seed: int
    n_sites: int = 60
    max_frame: int = 40
    huge_frame_every: int = 0
    """One frame in this many messages has 5,000 to 15,000 rows (0: never)."""
    p_bad_row: float = 0.12
    tag: str = "fz"
    now: float = NOW
    """The processor's clock: valid timestamps lie in the two hours before it."""
    max_depth: int = 100_000
    """The deepest nesting of the unreadable messages."""
    rng: random.Random = field(init=False)
    sites: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.sites = {k: hostile_sites(self.rng, self.n_sites, f"{self.tag}{k[0]}")
                      for k in KINDS}

    def messages(self, n: int, start: int = 0, total: int | None = None,
                 kind: str | None = None) -> Iterator[Message]:
        """``n`` messages (60% traffic, 40% air, or all of ``kind``); ``start`` and
        ``total`` place them in the run's time band."""
        total = total or n
        for i in range(start, start + n):
            k = kind or (KINDS[0] if self.rng.random() < 0.6 else KINDS[1])
            yield self.message(k, self.now - BAND_S + BAND_S * i / total)

    def _t(self, t: float) -> float:
        # now and then out of order, within and beyond the allowed lateness
        r = self.rng.random()
        jitter = self.rng.uniform(-20, 5) if r < 0.9 else self.rng.uniform(-900, 0)
        return min(max(t + jitter, self.now - BAND_S), self.now - 1)

    def _key(self, site: Any) -> bytes | None:
        r = self.rng.random()
        if r < 0.75 and isinstance(site, str):
            return site.encode("utf-8", "surrogatepass")
        return self.rng.choice([None, b"", b"someone-else", b"\xff\xfe", b"k" * 300])

    def message(self, kind: str, t: float) -> Message:
        rng = self.rng
        site = rng.choice(self.sites[kind])
        r = rng.random()
        if r < 0.55:
            return self._single(kind, site, t, 0.0 if rng.random() < 0.5 else 0.35)
        if r < 0.72:
            return self._frame(kind, site, t)
        if r < 0.76:  # a reading of the other kind
            other = "air" if kind == "traffic" else "traffic"
            row = reading_row(rng, other, self._t(t), 0.0, self.now)
            value = enc(_obj(site, row.values)).encode()
            return Message(kind, self._key(site), value, [Slot(None, SCHEMA)], site, "other")
        if r < 0.80:
            return self._bad_site(kind, t)
        if r < 0.84:
            return self._odd_but_valid(kind, site, t)
        if r < 0.87:
            return self._heartbeat(kind, site, t)
        return self._unreadable(kind, site, t)

    def _heartbeat(self, kind: str, site: str, t: float) -> Message:
        """A heartbeat, valid or not: counted apart from readings (CONTRACT.md §3)."""
        rng = self.rng
        ts, d, future = ts_value(rng, self._t(t), 0.4, self.now)
        obj: dict[str, Any] = {"site_id": site, "ts": ts, "heartbeat": True}
        dec = set(d)
        c = rng.randrange(6)
        if c == 0:
            obj["heartbeat"] = rng.choice([False, 1, "true", None, Raw("NaN")])
            dec.add("schema")
        elif c == 1:  # reading fields: not a heartbeat's
            obj[rng.choice(["lane", "speed_kph", "no2_ugm3", "columns", "extra"])] = 1
            dec.add("schema")
        items = [(k, v) for k, v in obj.items() if v is not MISSING]
        rng.shuffle(items)
        return Message(kind, self._key(site), enc(Pairs(items)).encode(), [], site,
                       "heartbeat", frozenset(dec), future and not dec)

    def _single(self, kind: str, site: str, t: float, p_bad: float) -> Message:
        row = reading_row(self.rng, kind, self._t(t), p_bad, self.now)
        value = enc(_obj(site, row.values)).encode()
        return Message(kind, self._key(site), value,
                       [Slot(None, frozenset(row.dec), row.future)], site, "single")

    def _frame(self, kind: str, site: str, t: float) -> Message:
        rng = self.rng
        n = rng.randint(0, self.max_frame) if rng.random() < 0.9 else rng.randint(0, 3)
        p_bad = rng.choice([0.0, 0.05, self.p_bad_row, 0.5])
        if self.huge_frame_every and rng.randrange(self.huge_frame_every) == 0:
            # Each bad row's dead letter carries the whole frame's bytes: keep them few
            # (a frame with thousands of bad rows makes gigabytes of dead letters).
            n, p_bad = rng.randint(5_000, 15_000), 0.0005
        rows = [reading_row(rng, kind, self._t(t), p_bad, self.now) for _ in range(n)]
        names = ["ts", *(f.name for f in (TRAFFIC_FIELDS if kind == "traffic" else AIR_FIELDS))]
        if kind == "traffic":
            names.append("class")
        columns: dict[str, list[Any]] = {}
        for name in names:
            col = [r.values.get(name, MISSING) for r in rows]
            if rows and all(v is MISSING for v in col):
                if (name in ("ts", "lane", "speed_kph") and kind == "traffic") or name == "ts":
                    col = [None] * n  # keep a required column, as nulls (already schema)
                else:
                    continue  # an optional column nobody sent
            columns[name] = [None if v is MISSING else v for v in col]
        if not rows:
            columns = {name: [] for name in names[:3]}
        slots = [Slot(j, frozenset(r.dec), r.future) for j, r in enumerate(rows)]
        c = rng.random()
        whole = None
        if c < 0.03:
            columns["extra"] = [rng.random() for _ in range(n)]  # unknown: ignored
        elif c < 0.05 and n:
            columns[rng.choice(list(columns))].append(1.0)  # unequal lengths
            whole = SCHEMA
        elif c < 0.06:
            columns.pop("ts", None)
            whole = SCHEMA
        elif c < 0.07:
            columns["lane"] = 5  # type: ignore[assignment]  # a column that is not an array
            whole = SCHEMA
        elif c < 0.08:
            value = enc({"site_id": site, "columns": rng.choice(
                [[1, 2], "ts", None, 3, Raw("NaN"), [[1], [2]]])}).encode()
            return Message(kind, self._key(site), value, [Slot(None, SCHEMA)], site, "frame-bad")
        value = enc({"site_id": site, "columns": columns}).encode()
        if whole is not None:
            return Message(kind, self._key(site), value, [Slot(None, whole)], site, "frame-bad")
        return Message(kind, self._key(site), value, slots, site, "frame")

    def _bad_site(self, kind: str, t: float) -> Message:
        rng = self.rng
        bad = rng.choice(BAD_SITES)
        row = reading_row(rng, kind, self._t(t), 0.0, self.now)
        if rng.random() < 0.3:
            body: Any = {"site_id": bad, "columns": {k: [v] for k, v in row.values.items()
                                                      if v is not MISSING}}
        elif rng.random() < 0.2:
            body = {k: v for k, v in _obj(bad, row.values).items() if k != "site_id"}
        else:
            body = _obj(bad, row.values)
        return Message(kind, self._key(bad), enc(body).encode(), [Slot(None, SCHEMA)], None,
                       "bad-site")

    def _odd_but_valid(self, kind: str, site: str, t: float) -> Message:
        """Valid readings in unusual clothes: repeated keys, extras, whitespace, escapes."""
        rng = self.rng
        row = reading_row(rng, kind, self._t(t), 0.0, self.now)
        obj = _obj(site, row.values)
        c = rng.randrange(5)
        if c == 0:  # a repeated key: the last one counts, as in orjson and Python's json
            k = rng.choice([k for k in obj if k != "site_id"])
            items = [(k, rng.choice([-1, "x", None, Raw("NaN"), 10**400]))]
            items += list(obj.items())
            text = enc(Pairs(items))
        elif c == 1:  # extra fields of any shape
            obj["extra"] = rng.choice([Raw("[" * 900 + "]" * 900), Raw('"\\ud800"'), Raw("NaN"),
                                       _huge_int_text(rng), {"a": [1, {"b": None}]}, True])
            text = enc(obj)
        elif c == 2:
            text = " \n\t" + enc(obj) + " \r\n"
        elif c == 3:  # every non-ASCII character escaped
            text = json.dumps({k: v for k, v in obj.items() if type(v) is not Raw},
                              ensure_ascii=True)
            if any(type(v) is Raw for v in obj.values()):
                text = enc(obj)
        else:  # not escaped at all
            text = "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" +
                                  (json.dumps(v, ensure_ascii=False) if type(v) is str
                                   else enc(v)) for k, v in obj.items()) + "}"
        return Message(kind, self._key(site), text.encode("utf-8"),
                       [Slot(None, frozenset(row.dec), row.future)], site, "odd")

    def _unreadable(self, kind: str, site: str, t: float) -> Message:
        rng = self.rng
        good = enc(_obj(site, reading_row(rng, kind, self._t(t), 0.0, self.now).values)).encode()
        c = rng.randrange(11)
        dec = DECODE
        if c == 0:
            value: bytes | None = rng.choice([b"", None])
        elif c == 1:  # garbage bytes that cannot be an object
            value = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
            if value.lstrip(b" \t\r\n").startswith(b"{"):
                value = b"x" + value
            dec = frozenset({"decode", "schema"})  # "7" is JSON, just not an object
        elif c == 2:
            value = b"\xef\xbb\xbf" + good  # a UTF-8 byte-order mark
        elif c == 3:  # invalid UTF-8 inside a string
            value = good.replace(b'"site_id":"', b'"site_id":"\xc3\x28', 1)
            if value == good:
                value = good[:-1] + b', "x": "\xed\xa0\x80"}'
        elif c == 4:
            value = good[: rng.randint(1, max(1, len(good) - 1))]  # truncated
        elif c == 5:
            depth = min(rng.choice([1025, 5000, 100_000]), self.max_depth)
            value = b"[" * depth + b"]" * depth if rng.random() < 0.7 else b"[" * depth
        elif c == 6:  # deep nesting inside a field
            depth = min(rng.choice([1100, 20_000]), self.max_depth)
            value = good[:-1] + b', "lane": ' + b"[" * depth + b"]" * depth + b"}"
        elif c == 7:  # JSON, but not an object
            value = rng.choice([b"[1, 2]", b'"A13"', b"7", b"null", b"true", b"[]", b"[{}]",
                                b"NaN", b"1e400", b'"\\ud800"'])
            dec = SCHEMA
        elif c == 8:
            value = good.decode().encode("utf-16")  # another encoding (with its BOM)
        elif c == 9:
            value = rng.choice([b"{", b"}", b"{}}", b"{'site_id': 'A'}", b"\x00" * 10,
                                good + b"garbage", good + good])
        else:
            value = good.replace(b"{", b"{,", 1)
        return Message(kind, self._key(site), value, [Slot(None, dec)], None, "unreadable")


def expected_readings(msgs: list[Message]) -> int:
    """Readings the contract counts for these messages."""
    return sum(len(m.slots) for m in msgs)


def site_partition(partitions: int) -> Callable[[str], int]:
    """A site's partition (any fixed hash serves the in-process runs)."""
    return lambda site: zlib.crc32(site.encode("utf-8", "surrogatepass")) % partitions


def key_partition(key: bytes | None, partitions: int, rng: random.Random) -> int:
    """Where a producer puts a message: by its key's hash; a missing key anywhere."""
    return rng.randrange(partitions) if key is None else zlib.crc32(key) % partitions


# -- checking -----------------------------------------------------------------------------------

@dataclass
class Ledger:
    """What was sent, by (topic, partition, offset), and what came back as dead letters."""

    sent: dict[tuple[str, int, int], Message] = field(default_factory=dict)
    readings: int = 0
    seen: set[tuple[str, int, int, int | None]] = field(default_factory=set)
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    heartbeats: int = 0
    hb_dead_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, topic: str, partition: int, offset: int, m: Message) -> None:
        self.sent[(topic, partition, offset)] = m
        self.readings += len(m.slots)
        self.heartbeats += m.heartbeat is not None

    def check_dead(self, key: bytes | None, rec: Mapping[str, Any],
                   rekeyed: bool = False) -> None:
        """One dead-letter record against the contract (§1) and the message it names.

        With ``rekeyed``, a message re-keyed to its site's partition may come back keyed
        by its site_id: its dead letter then carries that key, not the original one.
        """
        assert set(rec) == {"reason", "detail", "topic", "partition", "offset", "row",
                            "value_b64"}, rec
        reason = rec["reason"]
        assert reason in REASONS, rec
        assert isinstance(rec["detail"], str) and rec["detail"], rec
        where = (rec["topic"], rec["partition"], rec["offset"])
        m = self.sent.get(where)
        assert m is not None, f"dead letter for a message never sent: {rec}"[:500]
        row = rec["row"]
        assert row is None or (type(row) is int and row >= 0), rec
        if m.heartbeat is not None:
            assert row is None and reason in m.hb_allowed(), (
                f"{reason!r} for a heartbeat that may only be {sorted(m.hb_allowed())}: "
                f"{rec['detail']!r} {m.value!r}"[:1500])
            self.hb_dead_by_reason[reason] = self.hb_dead_by_reason.get(reason, 0) + 1
        else:
            slot = next((s for s in m.slots if s.row == row), None)
            assert slot is not None, f"no such reading {row!r} in {m.what} {m.value!r}"[:800]
            assert reason in slot.allowed(), (
                f"{reason!r} for a reading that may only be {sorted(slot.allowed())}: "
                f"{m.what} row {row} {rec['detail']!r} {m.value!r}"[:1500])
            self.dead_by_reason[reason] = self.dead_by_reason.get(reason, 0) + 1
        value = base64.b64decode(rec["value_b64"])
        original = m.value or b""
        if len(original) > MAX_DEAD_VALUE:  # the start only, said in the detail
            assert value in (original[:MAX_DEAD_VALUE], b""), where
        elif len(original) > MAX_REPEATED_VALUE and not value:  # a later row of a big frame
            assert "first dead letter" in rec["detail"], where
        else:
            assert value == original, where
        assert key == m.key or (rekeyed and m.site is not None and
                                key == m.site.encode()), (key, m.key, m.site)
        ident = (*where, row)
        assert ident not in self.seen, f"dead-lettered twice: {ident}"
        self.seen.add(ident)

    def check_complete(self) -> None:
        """Every reading that must be dead-lettered was."""
        missing = []
        for (topic, p, o), m in self.sent.items():
            if m.heartbeat is not None and "ok" not in m.hb_allowed() and \
                    (topic, p, o, None) not in self.seen:
                missing.append((topic, p, o, None, sorted(m.hb_allowed()), m.what))
            for s in m.slots:
                allowed = s.allowed()
                if "ok" not in allowed and "late" not in allowed and \
                        (topic, p, o, s.row) not in self.seen:
                    missing.append((topic, p, o, s.row, sorted(allowed), m.what))
        assert not missing, f"{len(missing)} readings not dead-lettered, e.g. {missing[:5]}"

    def forget(self) -> None:
        """Drop the messages checked so far (long runs keep memory flat)."""
        self.sent.clear()
        self.seen.clear()


def dead_json(value: bytes) -> dict[str, Any]:
    """A dead-letter record as a consumer reads it."""
    rec: dict[str, Any] = orjson.loads(value)
    return rec
