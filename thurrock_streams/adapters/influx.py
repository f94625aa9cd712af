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
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    >>> to_line("traffic", {"site_id": "A13 EB", "window": "1m", "ts": 60.0, "count": 2,
    ...                     "flow_vph": 120.0, "mean_speed_kph": float("nan")})
    'traffic,site_id=A13\\ EB,window=1m count=2i,flow_vph=120 60000000000'
    >>> print(to_line("traffic", {"site_id": "a\\,b=c\\", "window": "1m", "ts": 60,
    ...                           "count": 1}))
    traffic,site_id=a\\\,b\=c\\,window=1m count=1i 60000000000
    """
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

    async def _post_influx(self, lines: list[str]) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.client.influxdb_client_async import (
            InfluxDBClientAsync,
        )

        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self.settings.influx_url, token=self.settings.influx_token.get() or "none",
                org=self.settings.influx_org, timeout=10_000, **self._tls)
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
