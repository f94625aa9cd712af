"""InfluxDB adapter: aggregate records to line protocol, and a writer that never drops.

:func:`to_line` maps one record of a processor topic to one InfluxDB point (schema of
CONTRACT.md §4–§6): tags and field names fixed, one type per field, timestamp = window
end. Non-finite floats are left out, so NaN and infinity never reach the store.

:class:`InfluxWriter` writes batches through ``influxdb-client``. A store that is down,
slow or answering 5xx/429 is retried with exponential backoff, without limit: the caller
does not commit the batch's source offsets until :meth:`InfluxWriter.write` returns, so
Kafka holds the data through an outage of any length. A batch the store rejects as bad
(HTTP 4xx) is split to find the points it refuses; those come back to the caller to be
dead-lettered, the rest are written.
"""

from __future__ import annotations

import asyncio
import math
import operator
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from influxdb_client import WritePrecision

from ..errors import SettingsError, SinkError
from ..settings import Settings

__all__ = ["InfluxWriter", "SinkStats", "tls_options", "to_line"]

# Record layout per processor topic: (measurement, tag names, integer fields, bool fields,
# string fields). Every other non-tag key except ``start``/``ts`` is a float field.
SCHEMAS: dict[str, tuple[str, tuple[str, ...], frozenset[str], frozenset[str], frozenset[str]]] = {
    "traffic": ("traffic", ("site_id", "window"), frozenset({"count"}), frozenset(),
                frozenset()),
    "air_quality": ("air_quality", ("site_id", "pollutant", "period"), frozenset({"daqi"}),
                    frozenset({"valid"}), frozenset()),
    "daqi": ("daqi", ("site_id",), frozenset({"index"}), frozenset(),
             frozenset({"band", "pollutant"})),
    "alerts": ("alerts", ("site_id", "rule", "severity", "state"), frozenset(), frozenset(),
               frozenset({"message"})),
}
_NOT_FIELDS = frozenset({"start", "ts", "measurement"})


# InfluxDB line protocol's special characters ("Special characters", line protocol
# reference, InfluxDB v2 docs), each escaped with a backslash, and the backslash itself
# escaped first: one ``str.translate`` pass maps every character once, so an escaping
# backslash is never escaped again. A measurement escapes comma and space; tag keys, tag
# values and field keys escape comma, equals sign and space; string field values escape
# double quote. Unescaped, ``a\,b`` ended the tag at the comma and the store refused the
# point, and a value ending in a backslash escaped the separator after it.
_ESCAPE_MEASUREMENT = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})
_ESCAPE_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_ESCAPE_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
# A line ends at a newline: no escape carries one (nor a carriage return) in any element.
_LINE_BREAKS = ("\n", "\r")
_SORTED_TAGS = {name: tuple(sorted(schema[1])) for name, schema in SCHEMAS.items()}


def to_line(schema: str, rec: dict[str, Any]) -> str:
    r"""One record as an InfluxDB line-protocol point (nanosecond timestamp).

    Tags and fields sorted by name, whole floats without ``.0``, every special character
    escaped (``_ESCAPE_*`` above). Formatted directly: building an ``influxdb_client``
    ``Point`` per record cost more than the rest of the sink together (and ``Point`` does
    not escape backslashes in tags). A record with a newline or carriage return in a tag,
    key or string, which no line can carry, raises :class:`SinkError`.

    The records of one topic share a few key layouts, and a site's tags repeat on every
    window, so the escaped tag set of each tag-value combination and a format plan of each
    key layout are kept (:class:`_Plan`): a record of numbers only is then one ``%``
    format, not a step per field. Anything else (a string field, a value of another type
    than its field's schema type (int, bool, else float), a non-finite float) takes
    :func:`_to_line_slow`, the field-by-field rule; both paths write the same bytes.

    >>> to_line("traffic", {"site_id": "A13 EB", "window": "1m", "ts": 60.0, "count": 2,
    ...                     "flow_vph": 120.0, "mean_speed_kph": float("nan")})
    'traffic,site_id=A13\\ EB,window=1m count=2i,flow_vph=120 60000000000'
    >>> print(to_line("traffic", {"site_id": "a\\,b=c\\", "window": "1m", "ts": 60,
    ...                           "count": 1}))
    traffic,site_id=a\\\,b\=c\\,window=1m count=1i 60000000000
    """
    if type(rec) is not dict:
        return _to_line_slow(schema, rec)
    layout = (schema, *rec)
    plan = _PLANS.get(layout)
    if plan is None:
        plan = _plan(schema, layout[1:])
    if plan.template is None:
        return _to_line_slow(schema, rec)
    values = plan.fields(rec)
    if plan.one:
        values = (values,)
    # The fast path holds when every value has the type the plan was made for (``bool``
    # is a type of its own here, so no bool passes for an int) and every float is finite:
    # a sum of finite numbers is finite or overflows to infinity, a NaN or an infinity
    # makes it NaN or infinite, so a finite sum proves each term finite.
    if tuple(map(type, values)) != plan.types:
        return _to_line_slow(schema, rec)
    try:
        finite = math.isfinite(sum(values))
    except OverflowError:  # an integer past the float range
        finite = False
    if not finite:
        return _to_line_slow(schema, rec)
    tag_values = plan.tags(rec)
    prefix = _PREFIXES.get(tag_values)
    if prefix is None:
        prefix = _prefix(schema, tag_values, rec)
    if _ORJSON_FLOATS:
        # orjson prints the numbers of a tuple in one call, as ``repr`` does (checked at
        # import, :func:`_orjson_prints_like_repr`) except below 1e-4, where it writes
        # ``0.00001`` and ``1e-6`` for Python's ``1e-05`` and ``1e-06``: such a record
        # takes the slow path. ``true``/``false`` come out as line protocol writes them.
        try:
            text = orjson.dumps(values)
        except orjson.JSONEncodeError:  # an integer past 64 bits
            return _to_line_slow(schema, rec)
        if b"e-" in text or b"0.0000" in text:
            return _to_line_slow(schema, rec)
        fields = plan.template % (*text[1:-1].decode().split(","),)
    else:
        fields = plan.template % tuple(
            ("true" if v else "false") if type(v) is bool else repr(v) for v in values)
    # A whole float loses its ``.0``. The fields hold plain keys and numbers only, so a
    # ``.0`` followed by a separator or the end is the end of a whole float.
    if plan.has_float:
        fields = fields.replace(".0,", ",").removesuffix(".0")
    return f"{prefix}{fields} {round(float(rec['ts']) * 1e9)}"


def _orjson_prints_like_repr() -> bool:
    """Whether this orjson prints numbers as Python's ``repr`` does from 1e-4 up (orjson
    3.10+ does; an older one printing ``1e16`` for ``1e+16`` falls back to ``repr``)."""
    probe = (0.0, -0.0, 1e-4, 0.1, 1.5, 4800.0, 86.06124999999997, 100.88999999999999,
             1234567890123456.0, 9999999999999998.0, 1e16, 1.5e16, 123456789e20, 1e22,
             1.7976931348623157e308, -2.5e-4, -1e300, 2**53, 0, -7, 10**18, True, False)
    want = ",".join(("true" if v else "false") if type(v) is bool else repr(v)
                    for v in probe)
    return orjson.dumps(probe)[1:-1].decode() == want


_ORJSON_FLOATS = _orjson_prints_like_repr()


class _Plan:
    """How to format the records of one key layout (see :func:`to_line`).

    ``template`` is None when the layout has a string field, a key that needs escaping,
    or no field at all: every record of it then takes the slow path.
    """

    __slots__ = ("fields", "has_float", "one", "tags", "template", "types")

    def __init__(self, fields: Callable[[dict[str, Any]], Any],
                 tags: Callable[[dict[str, Any]], Any], template: str | None,
                 types: tuple[type, ...], one: bool, has_float: bool) -> None:
        self.fields, self.tags, self.template, self.types = fields, tags, template, types
        self.one, self.has_float = one, has_float


_PLANS: dict[tuple[str, ...], _Plan] = {}
_PREFIXES: dict[tuple[Any, ...], str] = {}
_MAX_PLANS = 4096
_MAX_PREFIXES = 1 << 17
_PLAIN_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _never(rec: dict[str, Any]) -> Any:  # pragma: no cover - a plan without template
    raise AssertionError("not called")


def _plan(schema: str, keys: tuple[str, ...]) -> _Plan:
    """The plan of one key layout; the value types it expects are the schema's (int and
    bool fields as listed in :data:`SCHEMAS`, float for every other field)."""
    _, tags, ints, bools, strings = SCHEMAS[schema]
    names = [k for k in sorted(keys) if k not in _NOT_FIELDS and k not in tags]
    sorted_tags = _SORTED_TAGS[schema]
    tag_getter = operator.itemgetter(*sorted_tags) if len(sorted_tags) > 1 else (
        lambda rec, _t=sorted_tags[0]: (rec[_t],))
    plain = all(isinstance(k, str) and k and set(k) <= _PLAIN_KEY for k in names)
    template: str | None = None
    types: list[type] = []
    parts: list[str] = []
    if plain and names and "ts" in keys and not any(k in strings for k in names):
        for k in names:
            if k in ints:
                types.append(int)
                parts.append(f"{k}=%si")
            else:
                types.append(bool if k in bools else float)
                parts.append(f"{k}=%s")
        template = ",".join(parts)
    plan = _Plan(operator.itemgetter(*names) if names else _never,
                 lambda rec, _g=tag_getter, _s=schema: (_s, *_g(rec)),  # type: ignore[misc]
                 template, tuple(types), len(names) == 1, float in types)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()  # a topic of ever new key layouts: forget, do not grow
    _PLANS[(schema, *keys)] = plan
    return plan


def _prefix(schema: str, tag_values: tuple[Any, ...], rec: dict[str, Any]) -> str:
    """The escaped measurement and tag set, followed by the space before the fields."""
    measurement = SCHEMAS[schema][0]
    tag_parts = []
    for t, raw in zip(_SORTED_TAGS[schema], tag_values[1:], strict=True):
        value = str(raw).translate(_ESCAPE_KEY)
        if value:
            tag_parts.append(f"{t.translate(_ESCAPE_KEY)}={value}")
    sep = "," if tag_parts else ""
    prefix = f"{measurement.translate(_ESCAPE_MEASUREMENT)}{sep}{','.join(tag_parts)} "
    if _LINE_BREAKS[0] in prefix or _LINE_BREAKS[1] in prefix:
        raise SinkError(f"a line break in a tag, key or string cannot be written: {rec}",
                        retryable=False)
    # Only string tag values are kept: ``True``, ``1`` and ``1.0`` are equal keys of a
    # dict but print differently.
    if all(type(v) is str for v in tag_values):
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()
        _PREFIXES[tag_values] = prefix
    return prefix


def _to_line_slow(schema: str, rec: dict[str, Any]) -> str:
    """:func:`to_line` field by field: the rule, for any record."""
    measurement, tags, ints, bools, strings = SCHEMAS[schema]
    tag_parts = []
    for t in _SORTED_TAGS[schema]:
        value = str(rec[t]).translate(_ESCAPE_KEY)
        if value:
            tag_parts.append(f"{t.translate(_ESCAPE_KEY)}={value}")
    field_parts = []
    for k in sorted(rec):
        v = rec[k]
        if k in _NOT_FIELDS or k in tags or v is None:
            continue
        if k in ints:
            field_parts.append(f"{k.translate(_ESCAPE_KEY)}={int(v)}i")
        elif k in bools:
            field_parts.append(f"{k.translate(_ESCAPE_KEY)}={'true' if v else 'false'}")
        elif k in strings:
            field_parts.append(f'{k.translate(_ESCAPE_KEY)}="{str(v).translate(_ESCAPE_STRING)}"')
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            text = str(float(v))
            field_parts.append(f"{k.translate(_ESCAPE_KEY)}="
                               f"{text[:-2] if text.endswith('.0') else text}")
    if not field_parts:
        raise SinkError(f"record has no field to write: {rec}", retryable=False)
    sep = "," if tag_parts else ""
    line = (f"{measurement.translate(_ESCAPE_MEASUREMENT)}{sep}{','.join(tag_parts)} "
            f"{','.join(field_parts)} {round(float(rec['ts']) * 1e9)}")
    if _LINE_BREAKS[0] in line or _LINE_BREAKS[1] in line:
        raise SinkError(f"a line break in a tag, key or string cannot be written: {rec}",
                        retryable=False)
    return line


def tls_options(s: Settings) -> dict[str, Any]:
    """TLS options of the InfluxDB client: the CA bundle ``INFLUX_CA_FILE`` to trust
    (else the system's trust store), and ``INFLUX_VERIFY_SSL=false`` to skip checking the
    certificate (test set-ups only: anyone on the path could then read the token)."""
    if s.influx_ca_file:
        path = Path(s.influx_ca_file)
        if not path.is_file():
            raise SettingsError(f"INFLUX_CA_FILE={s.influx_ca_file!r} is not a readable file")
    return {"verify_ssl": s.influx_verify_ssl, "ssl_ca_cert": s.influx_ca_file or None}


@dataclass
class SinkStats:
    """The writer's state, served on the worker's metrics page."""

    written_points: int = 0
    pending_points: int = 0
    retries: int = 0
    rejected_points: int = 0
    last_error: str = ""
    last_error_at: float = 0.0
    last_write_at: float = 0.0
    outage_since: float | None = None
    close_to_store_ms: list[float] = field(default_factory=list)


class InfluxWriter:
    """Writes line-protocol batches; retries transient failures until they succeed."""

    def __init__(self, settings: Settings, *, post: Callable[[list[str]], Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.stats = SinkStats()
        self._clock = clock
        self._client: Any = None
        self._tls = tls_options(settings)  # a bad INFLUX_CA_FILE stops the worker at start
        self._post = post or self._post_influx

    def open(self) -> None:
        """Create the HTTP client now rather than at the first write (its TLS context costs
        ≈ 25 ms, which the first window closed would otherwise wait for). Call it inside
        the event loop; writing opens it all the same."""
        if self._client is None and self._post == self._post_influx:
            from influxdb_client.client.influxdb_client_async import (
                InfluxDBClientAsync,
            )

            self._client = InfluxDBClientAsync(
                url=self.settings.influx_url, token=self.settings.influx_token.get() or "none",
                org=self.settings.influx_org, timeout=10_000, **self._tls)

    async def _post_influx(self, lines: list[str]) -> None:
        from influxdb_client.client.exceptions import InfluxDBError

        self.open()
        try:
            await self._client.write_api().write(
                bucket=self.settings.influx_bucket, record="\n".join(lines),
                write_precision=WritePrecision.NS)
        except InfluxDBError as exc:
            status = getattr(exc.response, "status", None) if exc.response else None
            retryable = status is None or status >= 500 or status == 429
            raise SinkError(f"store answered {status}: {exc.message}"[:500],
                            retryable=retryable, status=status) from exc
        except (TimeoutError, OSError) as exc:
            raise SinkError(f"store unreachable: {exc!r}"[:500], retryable=True) from exc
        except Exception as exc:  # aiohttp client errors and the like: the store is away
            raise SinkError(f"store write failed: {exc!r}"[:500], retryable=True) from exc

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def write(self, lines: Sequence[str]) -> list[int]:
        """Write every point; return the indices of points the store refused as bad."""
        if not lines:
            return []
        self.stats.pending_points = len(lines)
        try:
            return await self._write_part(list(lines), 0)
        finally:
            self.stats.pending_points = 0

    async def _write_part(self, lines: list[str], base: int) -> list[int]:
        delay = 0.2
        while True:
            try:
                await self._post(lines)
            except SinkError as exc:
                self._note_error(exc)
                if not exc.retryable:
                    return await self._split(lines, base)
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                delay = min(delay * 2, self.settings.sink_max_backoff_s)
                self.stats.retries += 1
                continue
            self.stats.written_points += len(lines)
            self.stats.last_write_at = self._clock()
            self.stats.outage_since = None
            return []

    async def _split(self, lines: list[str], base: int) -> list[int]:
        if len(lines) == 1:
            self.stats.rejected_points += 1
            return [base]
        mid = len(lines) // 2
        return (await self._write_part(lines[:mid], base)
                + await self._write_part(lines[mid:], base + mid))

    def _note_error(self, exc: SinkError) -> None:
        now = self._clock()
        self.stats.last_error = str(exc)
        self.stats.last_error_at = now
        if exc.retryable and self.stats.outage_since is None:
            self.stats.outage_since = now
