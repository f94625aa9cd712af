"""WebTRIS-style 15-minute CSV rows expanded into vehicle detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors_sim.errors import InputFormatError
from sensors_sim.webtris import MPH_TO_KPH, WebtrisRow, expand_row, read_webtris, webtris_lines
from thurrock_streams.registry import load_registry

REG = load_registry()
SPEED_BINS = ["0 - 10", "11 - 15", "16 - 20", "21 - 25", "26 - 30", "31 - 35", "36 - 40",
              "41 - 45", "46 - 50", "51 - 55", "56 - 60", "61 - 70", "71 - 80", "80+"]
HEADER = (["Site Name", "Report Date", "Time Period Ending", "Time Interval", "0 - 520 cm",
           "521 - 660 cm", "661 - 1160 cm", "1160+ cm"] + [f"{b} mph" for b in SPEED_BINS]
          + ["Avg mph", "Total Volume"])
SITE = "M25/4350A;GPS Ref: 556120;178466; Clockwise"
LONDON_MIDNIGHT = 1_717_369_200.0  # 2024-06-03 00:00 BST = 2024-06-02 23:00 UTC


def _csv(path: Path, rows: list[list[str]]) -> Path:
    def q(cell: str) -> str:
        return f'"{cell}"' if ("," in cell or ";" in cell) else cell

    path.write_text("\n".join(",".join(q(c) for c in r) for r in [HEADER, *rows]) + "\n")
    return path


def _row(date: str, end: str, lengths: list[int], speeds: list[int], total: int | str
         ) -> list[str]:
    return [SITE, date, end, "0", *map(str, lengths), *map(str, speeds), "63", str(total)]


SPEEDS_160 = [0, 0, 0, 0, 0, 0, 0, 1, 3, 10, 30, 80, 30, 6]


def test_sample_expands_to_total_volume_inside_the_period(tmp_path: Path) -> None:
    path = _csv(tmp_path / "w.csv", [
        _row("2024-06-03T00:00:00", "00:14:00", [120, 10, 8, 22], SPEEDS_160, 160),
        _row("03/06/2024", "00:29:00", [100, 9, 7, 20], [0] * 7 + [0, 2, 9, 25, 70, 25, 5], 136),
        _row("2024-06-03", "00:45", [3, 0, 0, 1], [0] * 14, 4),  # no speed bins: Avg mph
    ])
    (batch,) = read_webtris(str(path), REG, seed=1)
    assert batch.site_id == "M25/4350A"
    ts = batch.ts
    assert len(batch) == 160 + 136 + 4
    ends = [LONDON_MIDNIGHT + 900, LONDON_MIDNIGHT + 1800, LONDON_MIDNIGHT + 2700]
    counts = [int(((ts >= e - 900) & (ts < e)).sum()) for e in ends]
    assert counts == [160, 136, 4]
    assert np.all(np.diff(ts) >= 0)
    first = batch.take(np.arange(160))
    cls = first.columns["class"].tolist()
    assert (cls.count("car"), cls.count("lgv"), cls.count("hgv")) == (120, 10, 30)
    length = first.columns["length_m"]
    car = first.columns["class"] == "car"
    assert length[car].max() <= 5.2 and length[~car].min() > 5.2
    mph = np.sort(first.columns["speed_kph"] / MPH_TO_KPH)
    edges = [0, 11, 16, 21, 26, 31, 36, 41, 46, 51, 56, 61, 71, 81, 96]
    hist, _ = np.histogram(mph, bins=edges)
    assert hist.tolist() == SPEEDS_160
    hgv = first.columns["class"] == "hgv"
    assert first.columns["speed_kph"][hgv].mean() < first.columns["speed_kph"][~hgv].mean()
    assert set(batch.columns["lane"].tolist()) <= {1, 2}


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 200), min_size=4, max_size=4),
       speeds=st.lists(st.integers(0, 60), min_size=14, max_size=14),
       extra=st.integers(-20, 20), end_min=st.sampled_from([14, 15, 29, 30, 44, 59, 0]),
       seed=st.integers(0, 10))
def test_any_row_gives_exactly_its_total(lengths: list[int], speeds: list[int], extra: int,
                                         end_min: int, seed: int) -> None:
    total = max(0, sum(lengths) + extra)  # bins need not add up: the total wins
    end = 1_717_400_000.0 - 1_717_400_000.0 % 900 + (60.0 if end_min % 15 == 14 else 0.0)
    row = WebtrisRow("S", end, [(0, lengths[0]), (521, lengths[1]), (661, lengths[2]),
                                (1160, lengths[3])],
                     [(float(lo), float(lo) + 5, c) for lo, c in zip(range(0, 70, 5), speeds,
                                                                     strict=True)],
                     total, 55.0)
    b = expand_row(row, "S", lanes=3, seed=seed)
    assert len(b) == total
    assert np.all((b.ts >= end - 900) & (b.ts < end))
    assert np.all(b.columns["speed_kph"] >= 0) and np.all(b.columns["speed_kph"] <= 250)
    assert np.all((b.columns["length_m"] > 0) & (b.columns["length_m"] <= 30))
    assert np.all((b.columns["lane"] >= 1) & (b.columns["lane"] <= 3))
    if total == sum(lengths):
        assert int((b.columns["class"] == "hgv").sum()) == lengths[2] + lengths[3]


def test_tolerant_parsing(tmp_path: Path) -> None:
    text = ('\ufeff"Site Name" , "Report Date","Time Period Ending","0-520cm","521 - 660 cm",'
            '"661 - 1160 cm","1160+ cm","Avg mph","Total Volume"\n'
            'A13-STIFFORD-EB;x,2024-06-03 00:00:00,00:15:00,5,,1,,,\n'
            ',,,,,,,,\n')
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    (batch,) = read_webtris(str(path), REG, seed=0, local_uk=False)
    assert batch.site_id == "A13-STIFFORD-EB"
    assert len(batch) == 6  # blank total: the sum of the length bins
    assert np.all((batch.ts >= 1_717_372_800.0) & (batch.ts < 1_717_373_700.0))
    assert batch.columns["lane"].max() <= 3


def test_site_id_override_and_lines(tmp_path: Path) -> None:
    path = _csv(tmp_path / "w.csv", [_row("2024-06-03", "08:14:00", [40, 5, 2, 3], SPEEDS_160,
                                          50)])
    lines = list(webtris_lines(path, REG, site_id="A13-STIFFORD-EB", frames=20))
    assert [len(x["value"]["columns"]["ts"]) for x in lines] == [20, 20, 10]
    assert {x["key"] for x in lines} == {"A13-STIFFORD-EB"}
    again = list(webtris_lines(path, REG, site_id="A13-STIFFORD-EB", frames=20))
    assert lines == again


def test_bad_date_names_its_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "w.csv", [_row("2024-06-03", "00:14:00", [1, 0, 0, 0], [0] * 14, 1),
                                     _row("next tuesday", "00:29:00", [1, 0, 0, 0], [0] * 14, 1)])
    with pytest.raises(InputFormatError) as err:
        read_webtris(str(path), REG)
    assert err.value.line == 3
