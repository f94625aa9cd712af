"""The UK Daily Air Quality Index (DAQI): rounding, banding and the overall index.

Pure numpy; see CONTRACT.md §5 and DOMAIN.md §1. All concentrations are µg/m³.
"""

from __future__ import annotations

import operator
from typing import Final, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BANDS",
    "BREAKPOINTS",
    "DAQI_PERIOD",
    "DAQI_POLLUTANTS",
    "NO_INDEX",
    "Band",
    "band_name",
    "band_names",
    "daqi_index",
    "overall_index",
    "round_half_up",
]

Band = Literal["Low", "Moderate", "High", "Very High"]
BANDS: Final[tuple[Band, ...]] = ("Low", "Moderate", "High", "Very High")

#: The DAQI pollutants, in the order that breaks ties in :func:`overall_index`.
DAQI_POLLUTANTS: Final[tuple[str, ...]] = ("no2", "so2", "o3", "pm25", "pm10")

#: Sentinel index for "no valid mean, so no index" (DAQI indices are 1..10).
NO_INDEX: Final = 0


def _bounds(*upper: int) -> NDArray[np.int64]:
    arr = np.array(upper, dtype=np.int64)
    arr.setflags(write=False)  # shared module state: nobody may edit the table in place
    return arr


# Inclusive upper bounds (whole µg/m³) of indices 1..9; index 10 is anything above.
# Source: Defra, "Update on Implementation of the Daily Air Quality Index" (April 2013) and
# the uk-air.defra.gov.uk DAQI page, as tabulated in DOMAIN.md §1 (PM10 index 4 is 51–58).
BREAKPOINTS: Final[dict[str, NDArray[np.int64]]] = {
    "o3": _bounds(33, 66, 100, 120, 140, 160, 187, 213, 240),  # running 8-h mean
    "no2": _bounds(67, 134, 200, 267, 334, 400, 467, 534, 600),  # 1-h mean
    "so2": _bounds(88, 177, 266, 354, 443, 532, 710, 887, 1064),  # 15-min mean
    "pm25": _bounds(11, 23, 35, 41, 47, 53, 58, 64, 70),  # 24-h mean
    "pm10": _bounds(16, 33, 50, 58, 66, 75, 83, 91, 100),  # 24-h mean
}

#: The averaging period (CONTRACT.md §5 period tag) each pollutant's index is taken from.
DAQI_PERIOD: Final[dict[str, str]] = {
    "no2": "1h",
    "so2": "15m",
    "o3": "8h",
    "pm25": "24h",
    "pm10": "24h",
}


def _round_half_up_float(x: NDArray[np.float64]) -> NDArray[np.float64]:
    # floor(x + 0.5) misrounds values one ulp below a half (0.49999999999999994 -> 1) and
    # above 2**52; comparing the exact fractional part x - floor(x) with 0.5 does not.
    f = np.floor(x)
    return f + (x - f >= 0.5)


def round_half_up(x: ArrayLike) -> NDArray[np.int64]:
    """Round to the nearest whole number, halves up (towards +inf), exactly.

    ``x`` must be finite and below 2**63 in magnitude: NaN and ±inf raise ``ValueError``
    (mask invalid means first, or use :func:`daqi_index`, which maps NaN to ``NO_INDEX``).

    >>> import numpy as np
    >>> round_half_up(np.array([200.49, 200.5, 50.5, -0.5, -0.51]))
    array([200, 201,  51,   0,  -1])
    """
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("round_half_up needs finite values; mask NaN and inf first")
    rounded = _round_half_up_float(arr)
    if (np.abs(rounded) >= 2.0**63).any():
        raise ValueError("value too large to round to a 64-bit integer")
    return rounded.astype(np.int64)


def daqi_index(
    pollutant: str, means: ArrayLike, valid: ArrayLike | None = None
) -> NDArray[np.int64]:
    """Return the DAQI sub-index (1..10) of each mean, rounded once (halves up) then banded.

    ``means`` are µg/m³ over the period in :data:`DAQI_PERIOD`. A NaN mean, or one whose
    ``valid`` entry is False, gets ``NO_INDEX`` (0); ±inf raises ``ValueError``, as does a
    pollutant outside the DAQI (``co`` included).

    >>> import numpy as np
    >>> daqi_index("no2", np.array([200.49, 200.5, np.nan]))
    array([3, 4, 0])
    >>> daqi_index("pm10", [50.49, 50.5], valid=[True, False])
    array([3, 0])
    """
    try:
        bounds = BREAKPOINTS[pollutant]
    except KeyError:
        raise ValueError(f"{pollutant!r} has no DAQI index (DAQI: {DAQI_POLLUTANTS})") from None
    arr = np.asarray(means, dtype=np.float64)
    if np.isinf(arr).any():
        raise ValueError("daqi_index needs finite means (NaN marks a missing one)")
    ok = ~np.isnan(arr)
    if valid is not None:
        ok &= np.broadcast_to(np.asarray(valid, dtype=np.bool_), arr.shape)
    rounded = _round_half_up_float(np.where(ok, arr, 0.0))
    # side="left" counts the bounds strictly below the rounded value.
    index = 1 + np.searchsorted(bounds.astype(np.float64), rounded, side="left")
    return np.where(ok, index, NO_INDEX).astype(np.int64)


def band_name(index: SupportsIndex) -> Band:
    """Return the band of one DAQI index: Low 1–3, Moderate 4–6, High 7–9, Very High 10.

    >>> band_name(3), band_name(4), band_name(10)
    ('Low', 'Moderate', 'Very High')
    """
    i = operator.index(index)  # ints and numpy integers; floats raise TypeError
    if not 1 <= i <= 10:
        raise ValueError(f"DAQI index must be 1..10, got {index!r}")
    return BANDS[(i - 1) // 3]


def band_names(indices: ArrayLike) -> NDArray[np.str_]:
    """Return the band name of each DAQI index (all must be 1..10).

    >>> band_names([1, 6, 7, 10])
    array(['Low', 'Moderate', 'High', 'Very High'], dtype='<U9')
    """
    idx = np.asarray(indices, dtype=np.int64)
    if ((idx < 1) | (idx > 10)).any():
        raise ValueError("DAQI indices must be 1..10; mask NO_INDEX entries first")
    return np.array(BANDS)[(idx - 1) // 3]


def overall_index(
    indices: ArrayLike, present: ArrayLike | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Return the highest sub-index per column and the row (pollutant) that sets it.

    ``indices`` has shape (n_pollutants, n), rows conventionally in :data:`DAQI_POLLUTANTS`
    order; a tie goes to the first such row. An entry counts when ``present`` is True
    (default: everywhere) and it is not ``NO_INDEX``. A column with no entry that counts
    gets index ``NO_INDEX`` and row -1.

    >>> import numpy as np
    >>> idx = np.array([[3, 2, 0], [5, 2, 0], [5, 1, 0]])
    >>> overall_index(idx)
    (array([5, 2, 0]), array([ 1,  0, -1]))
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2:
        raise ValueError(f"indices must have shape (n_pollutants, n), got {idx.shape}")
    counts = idx != NO_INDEX
    if present is not None:
        counts &= np.broadcast_to(np.asarray(present, dtype=np.bool_), idx.shape)
    if idx.shape[0] == 0:
        n = idx.shape[1]
        return np.full(n, NO_INDEX, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    if ((idx[counts] < 1) | (idx[counts] > 10)).any():
        raise ValueError("DAQI indices must be 1..10 (or NO_INDEX for none)")
    masked = np.where(counts, idx, NO_INDEX)
    row = np.argmax(masked, axis=0)  # argmax returns the first maximum: the tie rule
    best = np.take_along_axis(masked, row[np.newaxis, :], axis=0)[0]
    return best.astype(np.int64), np.where(best == NO_INDEX, -1, row).astype(np.int64)
