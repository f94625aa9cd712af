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
