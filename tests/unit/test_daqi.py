"""DAQI kernel: the table, rounding, banding and the overall index."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thurrock_streams.kernels.daqi import (
    BANDS,
    BREAKPOINTS,
    DAQI_PERIOD,
    DAQI_POLLUTANTS,
    NO_INDEX,
    band_name,
    band_names,
    daqi_index,
    overall_index,
    round_half_up,
)

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)

# Lower bounds of indices 1..10, transcribed from the DOMAIN.md §1 table (µg/m³).
LOWER = {
    "o3": [0, 34, 67, 101, 121, 141, 161, 188, 214, 241],
    "no2": [0, 68, 135, 201, 268, 335, 401, 468, 535, 601],
    "so2": [0, 89, 178, 267, 355, 444, 533, 711, 888, 1065],
    "pm25": [0, 12, 24, 36, 42, 48, 54, 59, 65, 71],
    "pm10": [0, 17, 34, 51, 59, 67, 76, 84, 92, 101],
}
BOUNDARIES = [(p, k) for p in DAQI_POLLUTANTS for k in range(1, 10)]


def ref_round(x: float) -> int:
    """Exact halves-up rounding."""
    return math.floor(Fraction(x) + Fraction(1, 2))


def ref_index(pollutant: str, mean: float) -> int:
    """Look the rounded mean up in the transcribed table, by ranges."""
    if math.isnan(mean):
        return NO_INDEX
    r = ref_round(mean)
    lows = LOWER[pollutant]
    return max([k + 1 for k, lo in enumerate(lows) if r >= lo] or [1])


def test_breakpoints_match_the_domain_table() -> None:
    assert set(BREAKPOINTS) == set(DAQI_POLLUTANTS) == set(LOWER)
    for p, lows in LOWER.items():
        assert BREAKPOINTS[p].dtype == np.int64
        assert BREAKPOINTS[p].tolist() == [lo - 1 for lo in lows[1:]]
    assert BREAKPOINTS["no2"].tolist() == [67, 134, 200, 267, 334, 400, 467, 534, 600]
    assert BREAKPOINTS["pm10"].tolist() == [16, 33, 50, 58, 66, 75, 83, 91, 100]


def test_breakpoints_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        BREAKPOINTS["no2"][0] = 1


def test_daqi_periods() -> None:
    assert DAQI_PERIOD == {"no2": "1h", "so2": "15m", "o3": "8h", "pm25": "24h", "pm10": "24h"}


@pytest.mark.parametrize(("pollutant", "k"), BOUNDARIES, ids=[f"{p}-{k}" for p, k in BOUNDARIES])
def test_every_band_boundary(pollutant: str, k: int) -> None:
    b = float(BREAKPOINTS[pollutant][k - 1])
    lo = float(LOWER[pollutant][k - 1])
    means = [lo, lo - 0.5, b, b + 0.49, b + 0.4999999, b + 0.5, b + 1.0]
    expected = [k, k, k, k, k, k + 1, k + 1]
    assert daqi_index(pollutant, np.array(means)).tolist() == expected
    if k > 1:
        assert daqi_index(pollutant, np.array([lo - 0.51])).tolist() == [k - 1]


@pytest.mark.parametrize("pollutant", DAQI_POLLUTANTS)
def test_very_high_band_and_floor(pollutant: str) -> None:
    top = float(BREAKPOINTS[pollutant][-1])
    means = np.array([0.0, 0.49, -3.0, top + 0.5, top + 1, 1e6, 1e300])
    assert daqi_index(pollutant, means).tolist() == [1, 1, 1, 10, 10, 10, 10]


@pytest.mark.parametrize(
    ("pollutant", "mean", "index"),
    [
        ("no2", 200.49, 3),
        ("no2", 200.5, 4),
        ("pm10", 50.5, 4),
        ("pm10", 50.49, 3),
        ("pm10", 51.0, 4),  # the "52–58" misprint would give 3
        ("o3", 240.6, 10),
        ("o3", 240.49, 9),
        ("so2", 266.0, 3),
        ("pm25", 70.5, 10),
    ],
)
def test_worked_examples(pollutant: str, mean: float, index: int) -> None:
    assert daqi_index(pollutant, np.array([mean])).tolist() == [index]


def test_daqi_index_shape_and_dtype() -> None:
    out = daqi_index("no2", np.array([[10.0, 700.0], [250.0, 600.4]]))
    assert out.dtype == np.int64
    assert out.tolist() == [[1, 10], [4, 9]]
    assert daqi_index("no2", np.array([])).shape == (0,)


def test_missing_and_invalid_means_get_no_index() -> None:
    means = np.array([np.nan, 210.0, 210.0])
    assert daqi_index("no2", means).tolist() == [NO_INDEX, 4, 4]
    assert daqi_index("no2", means, valid=[True, False, True]).tolist() == [0, 0, 4]


@pytest.mark.parametrize("pollutant", ["co", "CO", "nox", ""])
def test_pollutants_outside_the_daqi_raise(pollutant: str) -> None:
    with pytest.raises(ValueError, match="no DAQI index"):
        daqi_index(pollutant, np.array([1.0]))


def test_infinite_mean_raises() -> None:
    with pytest.raises(ValueError, match="finite"):
        daqi_index("o3", np.array([np.inf]))


def test_round_half_up() -> None:
    x = np.array([0.5, 1.5, 2.5, 200.49, 200.5, -0.5, -1.5, -0.51, 0.49999999999999994])
    out = round_half_up(x)
    assert out.dtype == np.int64
    assert out.tolist() == [1, 2, 3, 200, 201, 0, -1, -1, 0]
    assert round_half_up(np.array([2.0**52 + 1])).tolist() == [2**52 + 1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_round_half_up_rejects_what_it_cannot_round(bad: float) -> None:
    with pytest.raises(ValueError):
        round_half_up(np.array([1.0, bad]))


def test_band_name() -> None:
    names = [band_name(i) for i in range(1, 11)]
    assert names == ["Low"] * 3 + ["Moderate"] * 3 + ["High"] * 3 + ["Very High"]
    assert band_name(np.int64(7)) == "High"
    with pytest.raises(TypeError):
        band_name(3.0)  # type: ignore[arg-type]
    assert band_names(np.arange(1, 11)).tolist() == names
    assert band_names(np.array([], dtype=np.int64)).shape == (0,)
    assert set(names) == set(BANDS)


@pytest.mark.parametrize("bad", [0, 11, -1])
def test_band_name_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        band_name(bad)
    with pytest.raises(ValueError):
        band_names(np.array([1, bad]))


def test_overall_index() -> None:
    idx = np.array(
        [
            [3, 2, 0, 4],  # no2
            [5, 2, 0, 4],  # so2
            [5, 1, 0, 9],  # o3
            [1, 2, 0, 4],  # pm25
            [1, 1, 0, 10],  # pm10
        ]
    )
    best, row = overall_index(idx)
    assert best.tolist() == [5, 2, 0, 10]
    assert row.tolist() == [1, 0, -1, 4]
    assert best.dtype == row.dtype == np.int64
    present = np.ones_like(idx, dtype=bool)
    present[4, 3] = present[1, 0] = False
    best, row = overall_index(idx, present)
    assert best.tolist() == [5, 2, 0, 9]
    assert row.tolist() == [2, 0, -1, 2]


def test_overall_index_edges() -> None:
    best, row = overall_index(np.zeros((0, 3), dtype=np.int64))
    assert best.tolist() == [0, 0, 0] and row.tolist() == [-1, -1, -1]
    best, row = overall_index(np.ones((5, 0), dtype=np.int64))
    assert best.shape == row.shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        overall_index(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"1\.\.10"):
        overall_index(np.array([[11], [1]]))


@PROPERTY
@given(st.floats(min_value=-1e15, max_value=1e15) | st.integers(-4000, 4000).map(lambda k: k / 2))
def test_round_half_up_matches_exact_reference(x: float) -> None:
    assert round_half_up(np.array([x])).tolist() == [ref_round(x)]


half_steps = st.integers(-20, 2400).map(lambda k: k / 2)
near_halves = st.tuples(st.integers(0, 1200), st.sampled_from([-1e-9, -1e-12, 0.0, 1e-12])).map(
    lambda t: t[0] + 0.5 + t[1]
)
means_st = half_steps | near_halves | st.floats(-10, 2000) | st.just(math.nan)


@PROPERTY
@given(st.sampled_from(DAQI_POLLUTANTS), st.lists(means_st, max_size=40))
def test_daqi_index_matches_table_lookup(pollutant: str, means: list[float]) -> None:
    expected = [ref_index(pollutant, m) for m in means]
    assert daqi_index(pollutant, np.array(means, dtype=np.float64)).tolist() == expected


@PROPERTY
@given(
    st.integers(1, 5).flatmap(
        lambda n: st.lists(
            st.lists(st.tuples(st.integers(0, 10), st.booleans()), min_size=n, max_size=n),
            max_size=20,
        )
    )
)
def test_overall_index_matches_reference(columns: list[list[tuple[int, bool]]]) -> None:
    n_rows = len(columns[0]) if columns else 1
    idx = np.array([[c[r][0] for c in columns] for r in range(n_rows)], dtype=np.int64)
    present = np.array([[c[r][1] for c in columns] for r in range(n_rows)], dtype=bool)
    idx = idx.reshape(n_rows, len(columns))
    present = present.reshape(n_rows, len(columns))
    best, row = overall_index(idx, present)
    for j, col in enumerate(columns):
        counted = [(v, r) for r, (v, ok) in enumerate(col) if ok and v != NO_INDEX]
        top = max((v for v, _ in counted), default=NO_INDEX)
        first = next((r for v, r in counted if v == top), -1)
        assert (best[j], row[j]) == (top, first)
