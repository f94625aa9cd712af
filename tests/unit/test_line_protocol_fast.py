"""The sink's line protocol for every aggregate shape the pipelines write (issue #14).

``to_line`` formats a record of numbers with one plan per key layout and cached escaped
tag sets; the expected lines below are written by hand from CONTRACT.md §4–§6 and the
InfluxDB line protocol reference ("Special characters"; integers end in ``i``, booleans
are ``true``/``false``, strings are quoted), not produced by the code. Each record is
formatted twice, so that the second line comes from the cached plan and tag set.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.adapters import influx
from thurrock_streams.adapters.influx import to_line
from thurrock_streams.errors import SinkError

T = 1_700_000_060.0  # a window end, UTC epoch s
NS = "1700000060000000000"


def twice(schema: str, rec: dict[str, Any]) -> str:
    first = to_line(schema, dict(rec))
    assert to_line(schema, dict(rec)) == first
    return first


CASES: list[tuple[str, dict[str, Any], str]] = [
    # §4: a 1-minute window with vehicles (the processor's key order, not sorted)
    ("traffic", {"site_id": "M25-4711A", "window": "1m", "start": T - 60, "ts": T,
                 "count": 80, "flow_vph": 4800.0, "mean_speed_kph": 86.06124999999997,
                 "space_mean_speed_kph": 83.55293420970428, "p85_speed_kph": 100.88999999999999,
                 "hgv_pct": 22.5, "density_vpkm": 57.44861081662052,
                 "congestion_index": 0.16447065790295723},
     "traffic,site_id=M25-4711A,window=1m congestion_index=0.16447065790295723,count=80i,"
     "density_vpkm=57.44861081662052,flow_vph=4800,hgv_pct=22.5,"
     "mean_speed_kph=86.06124999999997,p85_speed_kph=100.88999999999999,"
     f"space_mean_speed_kph=83.55293420970428 {NS}"),
    # §4: an empty window: count 0, flow 0, the speed fields absent
    ("traffic", {"site_id": "A13 EB", "window": "15m", "start": T - 900, "ts": T, "count": 0,
                 "flow_vph": 0.0},
     f"traffic,site_id=A13\\ EB,window=15m count=0i,flow_vph=0 {NS}"),
    # a minute whose vehicles all stood still: no space-mean speed, index 1
    ("traffic", {"site_id": "S", "window": "1m", "start": T - 60, "ts": T, "count": 2,
                 "flow_vph": 120.0, "mean_speed_kph": 0.0, "p85_speed_kph": 0.0,
                 "hgv_pct": 0.0, "congestion_index": 1.0},
     f"traffic,site_id=S,window=1m congestion_index=1,count=2i,flow_vph=120,hgv_pct=0,"
     f"mean_speed_kph=0,p85_speed_kph=0 {NS}"),
    # §5: a valid 1-hour mean with its DAQI index
    ("air_quality", {"measurement": "air_quality", "site_id": "TK1", "pollutant": "no2",
                     "period": "1h", "start": T - 3600, "ts": T, "capture_pct": 100.0,
                     "valid": True, "mean": 32.183333333, "daqi": 1},
     f"air_quality,period=1h,pollutant=no2,site_id=TK1 capture_pct=100,daqi=1i,"
     f"mean=32.183333333,valid=true {NS}"),
    # §5: an invalid running mean
    ("air_quality", {"measurement": "air_quality", "site_id": "TK1", "pollutant": "pm25",
                     "period": "24h", "start": T - 86400, "ts": T,
                     "capture_pct": 4.166666666666667, "valid": False, "mean": 12.296388889},
     f"air_quality,period=24h,pollutant=pm25,site_id=TK1 capture_pct=4.166666666666667,"
     f"mean=12.296388889,valid=false {NS}"),
    # §5: an empty window: no mean, capture 0, not valid
    ("air_quality", {"measurement": "air_quality", "site_id": "TK1", "pollutant": "so2",
                     "period": "15m", "start": T - 900, "ts": T, "capture_pct": 0.0,
                     "valid": False},
     f"air_quality,period=15m,pollutant=so2,site_id=TK1 capture_pct=0,valid=false {NS}"),
    # §5: the hourly DAQI point: string fields
    ("daqi", {"measurement": "daqi", "site_id": "TK1", "ts": T, "index": 7, "band": "High",
              "pollutant": "pm25"},
     f'daqi,site_id=TK1 band="High",index=7i,pollutant="pm25" {NS}'),
    # §6: an alert event
    ("alerts", {"site_id": "TK1", "rule": "daqi:no2", "severity": "very high",
                "state": "raised", "value": 10, "threshold": 10, "ts": T,
                "message": 'DAQI 10 (Very High) at TK1: "NO2" 1h mean 601.0 µg/m³'},
     'alerts,rule=daqi:no2,severity=very\\ high,site_id=TK1,state=raised '
     'message="DAQI 10 (Very High) at TK1: \\"NO2\\" 1h mean 601.0 µg/m³",threshold=10,'
     f"value=10 {NS}"),
]


@pytest.mark.parametrize(("schema", "rec", "line"), CASES)
def test_every_aggregate_shape_gives_the_hand_written_line(schema: str, rec: dict[str, Any],
                                                           line: str) -> None:
    assert twice(schema, rec) == line


@pytest.mark.parametrize(("value", "text"), [
    (4800.0, "4800"), (-0.0, "-0"), (0.5, "0.5"), (1e-4, "0.0001"), (2.5e-4, "0.00025"),
    (1e-05, "1e-05"), (9.5e-05, "9.5e-05"), (-3.25e-07, "-3.25e-07"), (5e-324, "5e-324"),
    (1e16, "1e+16"), (1.5e16, "1.5e+16"), (1234567890123456.0, "1234567890123456"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (10.00001, "10.00001"),
    (100.0, "100"), (0.1 + 0.2, "0.30000000000000004"),
])
def test_floats_are_written_as_python_prints_them_without_a_trailing_dot_zero(
        value: float, text: str) -> None:
    # Python's shortest repr (the slow path's ``str(float)``); the fast path must agree,
    # including below 1e-4 where orjson alone would print ``0.00001``.
    for last in (False, True):  # a float followed by another field, and one at the end
        rec = {"site_id": "S", "window": "1m", "ts": 60.0, "count": 1, "flow_vph": value}
        key = "flow_vph"
        if last:
            rec = {"site_id": "S", "window": "1m", "ts": 60.0, "count": 1, "p85_speed_kph": value}
            key = "p85_speed_kph"
        assert twice("traffic", rec) == (
            f"traffic,site_id=S,window=1m count=1i,{key}={text} 60000000000")


@pytest.mark.parametrize(("site", "escaped"), [
    ("a b", "a\\ b"), ("a,b", "a\\,b"), ("a=b", "a\\=b"), ('"q"', '"q"'), ("a\\b", "a\\\\b"),
    ("end\\", "end\\\\"), ("x\\,y", "x\\\\\\,y"),
])
def test_tag_escaping_is_the_same_from_the_cache(site: str, escaped: str) -> None:
    rec = {"site_id": site, "window": "1m", "ts": 60.0, "count": 1, "flow_vph": 60.0}
    assert twice("traffic", rec) == (
        f"traffic,site_id={escaped},window=1m count=1i,flow_vph=60 60000000000")


def test_values_of_another_type_or_not_finite_follow_the_general_rule() -> None:
    base = {"site_id": "S", "window": "1m", "ts": 60.0, "count": 2, "flow_vph": 120.0,
            "mean_speed_kph": 50.0}
    twice("traffic", base)  # the layout's plan now expects int, float, float
    cases = [
        ({"mean_speed_kph": math.nan}, "count=2i,flow_vph=120"),
        ({"mean_speed_kph": -math.inf}, "count=2i,flow_vph=120"),
        ({"mean_speed_kph": None}, "count=2i,flow_vph=120"),
        ({"mean_speed_kph": 50}, "count=2i,flow_vph=120,mean_speed_kph=50"),   # int as float
        ({"mean_speed_kph": True}, "count=2i,flow_vph=120"),   # a bool is no number here
        ({"mean_speed_kph": "fast"}, "count=2i,flow_vph=120"),
        ({"count": 2.0}, "count=2i,flow_vph=120,mean_speed_kph=50"),
        ({"count": True}, "count=1i,flow_vph=120,mean_speed_kph=50"),
        ({"count": 2**70}, f"count={2**70}i,flow_vph=120,mean_speed_kph=50"),
        ({"flow_vph": 1e308, "mean_speed_kph": 1e308},
         "count=2i,flow_vph=1e+308,mean_speed_kph=1e+308"),  # the sum overflows
    ]
    for change, fields in cases:
        assert twice("traffic", {**base, **change}) == (
            f"traffic,site_id=S,window=1m {fields} 60000000000"), change


def test_tag_values_that_are_not_strings_are_printed_not_confused() -> None:
    # True == 1 == 1.0 as dict keys; each must print as itself.
    for value, text in ((1, "1"), (True, "True"), (1.0, "1.0"), ("1", "1")):
        rec = {"site_id": value, "window": "1m", "ts": 60.0, "count": 1}
        assert twice("traffic", rec) == f"traffic,site_id={text},window=1m count=1i 60000000000"


def test_empty_tag_values_are_left_out_and_bad_records_raise() -> None:
    assert twice("traffic", {"site_id": "", "window": "1m", "ts": 60.0, "count": 1}) == (
        "traffic,window=1m count=1i 60000000000")
    with pytest.raises(SinkError, match="line break"):
        to_line("traffic", {"site_id": "a\nb", "window": "1m", "ts": 60.0, "count": 1})
    with pytest.raises(SinkError, match="line break"):  # and not from the cache either
        to_line("traffic", {"site_id": "a\nb", "window": "1m", "ts": 60.0, "count": 1})
    with pytest.raises(SinkError, match="no field"):
        to_line("traffic", {"site_id": "S", "window": "1m", "ts": 60.0})
    with pytest.raises(KeyError):
        to_line("traffic", {"window": "1m", "ts": 60.0, "count": 1})
    with pytest.raises(KeyError):
        to_line("traffic", {"site_id": "S", "window": "1m", "count": 1})
    with pytest.raises(TypeError):
        to_line("traffic", [1, 2])  # type: ignore[arg-type]


def test_the_orjson_printer_is_checked_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    assert influx._orjson_prints_like_repr() is True  # the pinned-range orjson of the venv
    # an orjson that printed otherwise: the fast path prints with ``repr``, same bytes
    monkeypatch.setattr(influx, "_ORJSON_FLOATS", False)
    for schema, rec, line in CASES:
        assert twice(schema, rec) == line
    assert twice("traffic", {"site_id": "S", "window": "1m", "ts": 60.0, "count": 1,
                             "flow_vph": 1e-05}) == (
        "traffic,site_id=S,window=1m count=1i,flow_vph=1e-05 60000000000")


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                    st.booleans(), st.none(), st.just("x"))


@settings(max_examples=400)
@given(values=st.fixed_dictionaries({}, optional={
    k: numbers for k in ("count", "flow_vph", "mean_speed_kph", "hgv_pct", "congestion_index")}),
    site=st.text(min_size=0, max_size=8))
def test_the_fast_path_writes_what_the_field_by_field_rule_writes(values: dict[str, Any],
                                                                 site: str) -> None:
    rec = {"site_id": site, "window": "1m", "start": 0.0, "ts": 60.0, **values}
    try:
        want = influx._to_line_slow("traffic", rec)
    except (SinkError, OverflowError, ValueError) as exc:
        with pytest.raises(type(exc)):
            to_line("traffic", rec)
        return
    assert to_line("traffic", rec) == want
    assert to_line("traffic", rec) == want


@settings(max_examples=300)
@given(mean=st.floats(allow_nan=False, allow_infinity=False), valid=st.booleans(),
       capture=st.floats(0, 100), daqi=st.integers(1, 10))
def test_air_records_fast_and_field_by_field_agree(mean: float, valid: bool, capture: float,
                                                   daqi: int) -> None:
    rec = {"measurement": "air_quality", "site_id": "S", "pollutant": "o3", "period": "8h",
           "start": 0.0, "ts": 3600.0, "capture_pct": capture, "valid": valid, "mean": mean,
           "daqi": daqi}
    assert to_line("air_quality", rec) == influx._to_line_slow("air_quality", rec)
