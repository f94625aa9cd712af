"""Line-protocol escaping against an independent reader of InfluxDB's rules.

The reference below parses a line as InfluxDB's line protocol reference ("Special
characters") describes it, strictly: in a measurement a backslash may only escape a
comma, a space or a backslash; in tag keys, tag values and field keys a comma, an equals
sign, a space or a backslash; in a string field value a double quote or a backslash. Any
other backslash, or an unescaped separator inside an element, fails the parse. Every
record written must read back to exactly what was given.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thurrock_streams.adapters.influx import to_line
from thurrock_streams.errors import SinkError

MEASUREMENT_ESCAPES = frozenset(", \\")
KEY_ESCAPES = frozenset(",= \\")
STRING_ESCAPES = frozenset('"\\')


class BadLine(Exception):
    pass


def _read(line: str, i: int, stops: str, escapes: frozenset[str]) -> tuple[str, int]:
    """Read one element from ``line[i:]`` up to an unescaped char of ``stops``."""
    out = []
    while i < len(line) and line[i] not in stops:
        c = line[i]
        if c == "\\":
            if i + 1 >= len(line) or line[i + 1] not in escapes:
                raise BadLine(f"stray backslash at {i} in {line!r}")
            out.append(line[i + 1])
            i += 2
            continue
        if c in escapes - {"\\"}:
            raise BadLine(f"unescaped {c!r} at {i} in {line!r}")
        out.append(c)
        i += 1
    return "".join(out), i


def _read_string(line: str, i: int) -> tuple[str, int]:
    if line[i] != '"':
        raise BadLine(f"string field does not start with a quote at {i}")
    i += 1
    out = []
    while True:
        if i >= len(line):
            raise BadLine("unterminated string")
        c = line[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(line) or line[i + 1] not in STRING_ESCAPES:
                raise BadLine(f"stray backslash in a string at {i}")
            out.append(line[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1


def parse(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """(measurement, tags, fields, timestamp) of one line, by the rules above."""
    if "\n" in line or "\r" in line:
        raise BadLine("a line break inside a line")
    measurement, i = _read(line, 0, ", ", MEASUREMENT_ESCAPES)
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _read(line, i + 1, "=", KEY_ESCAPES)
        if line[i] != "=":
            raise BadLine("tag without '='")
        value, i = _read(line, i + 1, ", ", KEY_ESCAPES)
        if not key or not value:
            raise BadLine("empty tag key or value")
        tags[key] = value
    if line[i] != " ":
        raise BadLine(f"no space after the tag set at {i}")
    fields: dict[str, Any] = {}
    sep = " "
    while sep in (" ", ","):
        key, i = _read(line, i + 1, "=", KEY_ESCAPES)
        if not key or line[i] != "=":
            raise BadLine("field without key or '='")
        i += 1
        if line[i] == '"':
            value: Any
            value, i = _read_string(line, i)
        else:
            j = i
            while i < len(line) and line[i] not in ", ":
                i += 1
            raw = line[j:i]
            value = (int(raw[:-1]) if raw.endswith("i") else
                     {"true": True, "false": False}.get(raw))
            if value is None:
                value = float(raw)
        fields[key] = value
        sep = line[i]
        if sep == " ":
            break
    ts = line[i + 1:]
    if not ts.isdigit():
        raise BadLine(f"bad timestamp {ts!r}")
    return measurement, tags, fields, int(ts)


def traffic(site: str) -> dict[str, Any]:
    return {"site_id": site, "window": "1m", "start": 0.0, "ts": 60.0, "count": 3,
            "flow_vph": 180.0}


def test_the_reference_reader_rejects_what_the_old_escaping_wrote() -> None:
    # Before: ``a\,b`` was written ``a\\,b`` (the comma then ends the tag), and ``end\``
    # as ``end\ `` (the space is escaped: the store kept "end ").
    with pytest.raises(BadLine):
        parse("traffic,site_id=a\\\\,b,window=1m count=3i 60000000000")
    assert parse("traffic,site_id=end\\ ,window=1m count=3i 6")[1]["site_id"] == "end "


@pytest.mark.parametrize(("site", "escaped"), [
    ("a\\,b", "a\\\\\\,b"),          # a\,b
    ("end\\", "end\\\\"),            # end\
    ("\\\\", "\\\\\\\\"),            # two backslashes
    ("a\\ b", "a\\\\\\ b"),          # backslash then space
    ("x=\\=", "x\\=\\\\\\="),
    ('"q"', '"q"'),                  # quotes are not special in tags
    ("A13 EB, J30", "A13\\ EB\\,\\ J30"),
])
def test_tag_values_are_escaped_as_influxdb_says(site: str, escaped: str) -> None:
    line = to_line("traffic", traffic(site))
    assert line == f"traffic,site_id={escaped},window=1m count=3i,flow_vph=180 60000000000"
    assert parse(line)[1]["site_id"] == site


def test_string_fields_escape_quote_and_backslash_only() -> None:
    rec = {"site_id": "S", "rule": "r", "severity": "low", "state": "raised", "ts": 1,
           "message": 'say "hi", \\ = bye\\', "value": 1.5}
    line = to_line("alerts", rec)
    assert line == ('alerts,rule=r,severity=low,site_id=S,state=raised '
                    'message="say \\"hi\\", \\\\ = bye\\\\",value=1.5 1000000000')
    assert parse(line)[2] == {"message": rec["message"], "value": 1.5}


@pytest.mark.parametrize("c", [chr(i) for i in range(0x20, 0x7F)])
def test_every_printable_ascii_character_round_trips(c: str) -> None:
    for site in (c, f"a{c}b", f"{c}{c}", f"end{c}", f"\\{c}", f"{c}\\"):
        m, tags, fields, ts = parse(to_line("traffic", traffic(site)))
        assert (m, tags, fields, ts) == (
            "traffic", {"site_id": site, "window": "1m"}, {"count": 3, "flow_vph": 180.0},
            60_000_000_000)


printable = st.text(st.characters(codec="utf-8").filter(str.isprintable), min_size=1,
                    max_size=64)


@given(site=printable, message=printable, rule=printable)
def test_any_printable_site_id_and_message_round_trip(site: str, message: str,
                                                      rule: str) -> None:
    rec = {"site_id": site, "rule": rule, "severity": "high", "state": "cleared",
           "ts": 1_700_000_000, "message": message, "value": 2.0, "threshold": 1.0}
    assert parse(to_line("alerts", rec)) == (
        "alerts", {"rule": rule, "severity": "high", "site_id": site, "state": "cleared"},
        {"message": message, "threshold": 1.0, "value": 2.0}, 1_700_000_000_000_000_000)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb"])
def test_a_line_break_cannot_be_written(bad: str) -> None:
    with pytest.raises(SinkError, match="line break"):
        to_line("traffic", traffic(bad))
    with pytest.raises(SinkError, match="line break"):
        to_line("alerts", {"site_id": "S", "rule": "r", "severity": "low", "state": "raised",
                           "ts": 1, "message": bad})
