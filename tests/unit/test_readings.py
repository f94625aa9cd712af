"""Decoding and validation of readings and frames (CONTRACT.md §2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thurrock_streams.readings import RawMessage, decode_batch


def msg(value, offset: int = 0) -> RawMessage:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return RawMessage("traffic.readings", 0, offset, b"k", raw)


GOOD = {"site_id": "A13-EB", "ts": 60.5, "lane": 2, "speed_kph": 88.5, "length_m": 4.2,
        "class": "car"}


def reasons(kind, values):
    b = decode_batch(kind, [msg(v, i) for i, v in enumerate(values)])
    return len(b), [(r.msg, r.row, r.reason) for r in b.rejected]


def test_good_reading_decodes_to_columns() -> None:
    b = decode_batch("traffic", [msg(GOOD)])
    assert len(b) == 1 and b.rejected == []
    assert b.site.tolist() == ["A13-EB"] and b.ts.tolist() == [60.5]
    assert b.cols["speed_kph"].tolist() == [88.5] and b.cols["class"].tolist() == [0]
    assert b.row.tolist() == [-1]


def test_iso_timestamps_need_an_offset() -> None:
    ok = {**GOOD, "ts": "2026-01-01T00:01:00Z"}
    naive = {**GOOD, "ts": "2026-01-01T00:01:00"}
    b = decode_batch("traffic", [msg(ok), msg(naive, 1)])
    assert b.ts.tolist() == [1767225660.0]
    assert [(r.msg, r.reason) for r in b.rejected] == [(1, "schema")]


@pytest.mark.parametrize(("value", "reason"), [
    (b"\xff\xfe", "decode"),
    (b"{not json", "decode"),
    (None, "decode"),
    ([1, 2], "schema"),
    ({**GOOD, "site_id": ""}, "schema"),
    ({**GOOD, "site_id": "x" * 65}, "schema"),
    ({**GOOD, "site_id": "bad\nid"}, "schema"),
    ({**GOOD, "site_id": 7}, "schema"),
])
def test_whole_message_rejections(value, reason) -> None:
    n, rej = reasons("traffic", [value])
    assert n == 0 and rej == [(0, None, reason)]


@pytest.mark.parametrize(("change", "reason"), [
    ({"lane": 0}, "range"), ({"lane": 9}, "range"), ({"lane": 1.5}, "schema"),
    ({"lane": "1"}, "schema"), ({"lane": True}, "schema"), ({"lane": None}, "schema"),
    ({"speed_kph": -0.1}, "range"), ({"speed_kph": 250.01}, "range"),
    ({"speed_kph": "fast"}, "schema"), ({"length_m": 0}, "range"), ({"length_m": 30.5}, "range"),
    ({"class": "tractor"}, "schema"), ({"ts": None}, "schema"), ({"ts": [1]}, "schema"),
])
def test_field_rules(change, reason) -> None:
    n, rej = reasons("traffic", [{**GOOD, **change}])
    assert n == 0 and rej == [(0, None, reason)]


def test_boundaries_are_inclusive_where_the_contract_says() -> None:
    values = [{**GOOD, "speed_kph": 0}, {**GOOD, "speed_kph": 250}, {**GOOD, "lane": 8},
              {**GOOD, "length_m": 30}, {k: v for k, v in GOOD.items() if k != "class"}]
    n, rej = reasons("traffic", values)
    assert n == 5 and rej == []


def test_nan_and_infinity_dead_letter_only_their_row() -> None:
    raw = (b'{"site_id": "S", "columns": {"ts": [1, 2, 3], "lane": [1, 1, 1],'
           b' "speed_kph": [50, NaN, Infinity]}}')
    b = decode_batch("traffic", [msg(raw)])
    assert b.row.tolist() == [0]
    assert [(r.row, r.reason) for r in b.rejected] == [(1, "range"), (2, "range")]


def test_frame_bad_row_spares_its_neighbours() -> None:
    frame = {"site_id": "S", "columns": {"ts": [1, 2, 3], "lane": [1, 2, 3],
                                          "speed_kph": [10, 300, 30],
                                          "class": ["car", None, "hgv"]}}
    b = decode_batch("traffic", [msg(frame)])
    assert b.row.tolist() == [0, 2] and b.cols["class"].tolist() == [0, 2]
    assert [(r.row, r.reason, r.site) for r in b.rejected] == [(1, "range", "S")]



def test_a_class_of_another_type_or_name_is_schema_for_its_row_alone() -> None:
    classes = ["car", ["hgv"], {"c": 1}, 2, True, 1.0, "tractor", None, "bus"]
    n = len(classes)
    frame = {"site_id": "S", "columns": {"ts": list(range(n)), "lane": [1] * n,
                                          "speed_kph": [50] * n, "class": classes}}
    b = decode_batch("traffic", [msg(frame)])
    assert b.row.tolist() == [0, 7, 8] and b.cols["class"].tolist() == [0, -1, 3]
    assert [(r.row, r.reason) for r in b.rejected] == [(k, "schema") for k in range(1, 7)]

BOOL_ROWS = {"ts": [60, 61.5, True, 63], "lane": [1, False, 2, 3],
             "speed_kph": [40, 50.5, 60, True], "length_m": [4.0, None, 5, False]}


def test_a_boolean_in_a_number_column_is_schema_for_its_row_alone() -> None:
    # JSON true/false are not numbers (numpy would read them as 1 and 0)
    frame = {"site_id": "S", "columns": BOOL_ROWS}
    b = decode_batch("traffic", [msg(frame)])
    assert b.row.tolist() == [0]
    assert [(r.row, r.reason, r.detail) for r in b.rejected] == [
        (1, "schema", "lane must be a number"), (2, "schema", "ts must be epoch seconds "
                                                 "or an ISO-8601 string with an offset"),
        (3, "schema", "speed_kph must be a number")]
    single = {"site_id": "S", "ts": 60, "lane": 1, "speed_kph": True}
    assert reasons("traffic", [frame, single])[1][-1] == (1, None, "schema")


def test_numbers_read_as_float_of_each_and_anything_else_is_schema() -> None:
    cols = {"ts": [60, 61.25, 9007199254740993, 2**62], "lane": [1, 2, 3, 8],
            "speed_kph": [0, 250, 88.5, 2**53 + 1], "length_m": [None, 4, None, 30.0]}
    b = decode_batch("traffic", [msg({"site_id": "S", "columns": cols})])
    # exactly float() of each value; an integer past 2**53 rounds as Python rounds it
    assert b.ts.tolist() == [60.0, 61.25, float(9007199254740993)]
    assert b.cols["lane"].tolist() == [1, 2, 3]
    assert [r.reason for r in b.rejected] == ["range"]  # speed 2**53 + 1 > 250
    assert b.cols["speed_kph"].tolist() == [0.0, 250.0, 88.5]
    assert np.isnan(b.cols["length_m"][[0, 2]]).all() and b.cols["length_m"][1] == 4.0
    mixed = {"ts": [60, "x", [61], {"a": 1}], "lane": [1, 1, 1, 1],
             "speed_kph": [[1.0], [2.0], [3.0], [4.0]]}
    n, rej = reasons("traffic", [{"site_id": "S", "columns": mixed}])
    assert n == 0 and [r[2] for r in rej] == ["schema"] * 4


def test_unequal_frame_columns_reject_the_frame() -> None:
    frame = {"site_id": "S", "columns": {"ts": [1, 2], "lane": [1], "speed_kph": [10, 20]}}
    n, rej = reasons("traffic", [frame])
    assert n == 0 and rej == [(0, None, "schema")]


def test_air_needs_a_pollutant_and_ranges() -> None:
    values = [{"site_id": "A", "ts": 1, "no2_ugm3": 40.5},
              {"site_id": "A", "ts": 1, "temperature_c": 10},
              {"site_id": "A", "ts": 1, "no2_ugm3": 5000.1},
              {"site_id": "A", "ts": 1, "co_mgm3": 200.5},
              {"site_id": "A", "ts": 1, "pm10_ugm3": None, "o3_ugm3": 3},
              {"site_id": "A", "ts": 1, "no2_ugm3": 3, "humidity_pct": 101}]
    b = decode_batch("air", [msg(v, i) for i, v in enumerate(values)])
    assert b.msg.tolist() == [0, 4]
    assert np.isnan(b.cols["pm10_ugm3"][1]) and b.cols["o3_ugm3"][1] == 3
    assert [(r.msg, r.reason) for r in b.rejected] == [(1, "schema"), (2, "range"),
                                                       (3, "range"), (5, "range")]


# Integers beyond a float (issue 12, item 2): one such number is one bad row, reason
# ``range``; its neighbours in the frame are kept. 10**400 overflows a float64 (max about
# 1.8e308); 10**5000 is past Python's 4300-digit limit for int(str); 2**63 and 2**64 - 1
# are past int64 (and 2**64 past uint64, which orjson then reads as a float).
HUGE = {"1e400": 10**400, "-1e400": -(10**400), "1e5000": 10**5000, "-1e5000": -(10**5000),
        "2**63": 2**63, "2**64-1": 2**64 - 1, "2**64": 2**64, "-2**63-1": -(2**63) - 1}


def frame_bytes(columns: dict[str, list[object]], site: str = "S") -> bytes:
    """A frame as a sensor would send it: Python's json writes big ints digit by digit."""
    import sys

    sys.set_int_max_str_digits(0)  # let this test write 5000-digit numbers
    try:
        return json.dumps({"site_id": site, "columns": columns}).encode()
    finally:
        sys.set_int_max_str_digits(4300)


BEYOND_FLOAT = ["1e400", "-1e400", "1e5000", "-1e5000"]


@pytest.mark.parametrize(("field", "name"), [
    *((f, n) for f in ("speed_kph", "lane", "length_m") for n in HUGE),
    *(("ts", n) for n in BEYOND_FLOAT),
])
def test_a_huge_integer_dead_letters_its_row_alone(field: str, name: str) -> None:
    columns: dict[str, list[object]] = {"ts": [60, 61, 62], "lane": [1, 2, 3],
                                        "speed_kph": [50, 60, 70], "length_m": [4, 5, 6]}
    columns[field][1] = HUGE[name]
    b = decode_batch("traffic", [msg(frame_bytes(columns))])
    assert b.row.tolist() == [0, 2]
    assert b.cols["speed_kph"].tolist() == [50.0, 70.0] and b.cols["lane"].tolist() == [1, 3]
    assert [(r.msg, r.row, r.reason, r.site) for r in b.rejected] == [(0, 1, "range", "S")]
    assert field in b.rejected[0].detail


def test_a_huge_timestamp_within_float_range_is_read_as_seconds() -> None:
    # 2**63 s is a finite number of seconds: decoding keeps it (the processor then
    # dead-letters it as ``future``, CONTRACT.md §3).
    b = decode_batch("traffic", [msg(frame_bytes({"ts": [2**63, 2**64, 60], "lane": [1] * 3,
                                                   "speed_kph": [50] * 3}))])
    assert b.ts.tolist() == [2.0**63, 2.0**64, 60.0] and b.rejected == []


@pytest.mark.parametrize("name", ["1e400", "-1e5000", "2**64"])
def test_a_huge_integer_in_an_air_sample_or_single_reading_is_range(name: str) -> None:
    air = frame_bytes({"ts": [1, 2], "no2_ugm3": [HUGE[name], 40], "o3_ugm3": [3, 4]})
    b = decode_batch("air", [msg(air)])
    assert b.row.tolist() == [1]
    assert [(r.row, r.reason) for r in b.rejected] == [(0, "range")]
    single = json.dumps({**GOOD, "speed_kph": 10**400}).encode()
    n, rej = reasons("traffic", [single, GOOD])
    assert n == 1 and rej == [(0, None, "range")]


def test_whole_number_fields_far_beyond_int8_are_range_without_warnings() -> None:
    # lane is cast to int8 for the accepted rows: rejected ones must not reach the cast
    # (numpy warns "invalid value encountered in cast", an error under pytest here).
    values = [{**GOOD, "lane": v} for v in (1e19, 1e300, -1e300, 2**63, 2**64 - 1, 300)]
    n, rej = reasons("traffic", [*values, GOOD])
    assert n == 1 and [r[2] for r in rej] == ["range"] * 6


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_deep_nesting_is_decode_not_a_crash(depth: int) -> None:
    # orjson stops at 1024 levels; Python's json, the fallback, raises RecursionError.
    nested = b"[" * depth + b"]" * depth
    inside = b'{"site_id": "S", "columns": {"ts": [1], "lane": [1], "speed_kph": ' + \
        nested + b"}}"
    n, rej = reasons("traffic", [nested, inside, b"[" * depth, GOOD])
    assert n == 1 and rej == [(0, None, "decode"), (1, None, "decode"), (2, None, "decode")]


def test_python_ints_beyond_a_float_are_infinite_not_a_crash() -> None:
    # The parsers never hand such ints over (see _json_int); the column conversion must
    # still not raise if one arrives.
    from thurrock_streams.readings import _numeric, _parse_ts

    arr, present, mistyped = _numeric([1, 10**400, -(10**400)])
    assert arr.tolist() == [1.0, float("inf"), float("-inf")]
    assert present.all() and not mistyped.any()
    assert _parse_ts(-(10**400)) == float("-inf")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_non_finite_timestamp_is_range_like_any_other_number(literal: bytes) -> None:
    # Found by the fuzz suite: a NaN ts was taken for an unreadable one (``schema``).
    raw = (b'{"site_id": "S", "columns": {"ts": [1, ' + literal + b', "x"], "lane": [1, 1, 1],'
           b' "speed_kph": [50, 50, 50]}}')
    b = decode_batch("traffic", [msg(raw)])
    assert b.row.tolist() == [0]
    assert [(r.row, r.reason) for r in b.rejected] == [(1, "range"), (2, "schema")]
    single = b'{"site_id": "S", "ts": ' + literal + b', "lane": 1, "speed_kph": 50}'
    assert reasons("traffic", [single]) == (0, [(0, None, "range")])


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_non_finite_lane_is_range_not_a_fraction(literal: bytes) -> None:
    # Found by the fuzz suite: NaN failed the whole-number test (``schema``).
    single = b'{"site_id": "S", "ts": 1, "lane": ' + literal + b', "speed_kph": 50}'
    assert reasons("traffic", [single]) == (0, [(0, None, "range")])
