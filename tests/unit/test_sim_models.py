"""The traffic and air models: demand shape, fundamental diagram, classes, pollutants."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sensors_sim
from sensors_sim.air import simulate_air
from sensors_sim.clock import DAY_S, parse_duration, parse_instant, uk_offset_s
from sensors_sim.demand import CAPACITY_PCU, congested_speed, day_state, free_speed
from sensors_sim.episodes import episode_levels
from sensors_sim.errors import UsageError
from sensors_sim.traffic import simulate_traffic
from thurrock_streams.registry import load_registry

MONDAY = 19_877  # 2024-06-03, days since the epoch
START = MONDAY * DAY_S
REG = load_registry()


def test_doctests() -> None:
    for info in pkgutil.iter_modules(sensors_sim.__path__):
        mod = importlib.import_module(f"sensors_sim.{info.name}")
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, info.name


def test_daily_volume_follows_aadt_with_peaks() -> None:
    site = REG.traffic["A13-STIFFORD-EB"]
    b = simulate_traffic(site, START, START + DAY_S, seed=1)
    assert 0.9 * site.aadt < len(b) < 1.25 * site.aadt  # a weekday is busier than average
    hours = np.bincount(((b.ts - START) // 3600).astype(int), minlength=24)
    # BST: local 07-09 and 16-19 are UTC 06-08 and 15-18.
    assert hours[6:8].mean() > 5 * hours[1:4].mean()
    assert hours[15:18].mean() > 5 * hours[1:4].mean()
    assert hours[6:8].mean() > hours[11:13].mean()


def test_weekend_is_quieter_with_fewer_hgvs() -> None:
    site = REG.traffic["M25-J30-SB"]
    weekday = day_state(site, MONDAY, seed=2)
    sunday = day_state(site, MONDAY + 6, seed=2)
    assert sunday.car_vph.sum() < weekday.car_vph.sum()
    assert sunday.hgv_vph.sum() < 0.6 * weekday.hgv_vph.sum()


def test_hgv_share_is_high_on_port_roads() -> None:
    shares = {}
    for sid in ("A1089-TILBURY-NB", "A1014-MANORWAY-EB", "A126-GRAYS-EB"):
        b = simulate_traffic(REG.traffic[sid], START, START + DAY_S, seed=4)
        shares[sid] = float(np.mean(b.columns["class"] == "hgv"))
    assert shares["A1089-TILBURY-NB"] > 0.3
    assert shares["A1014-MANORWAY-EB"] > 0.3
    assert shares["A126-GRAYS-EB"] < 0.12


def test_vehicle_classes_lengths_lanes_and_speeds() -> None:
    site = REG.traffic["M25-J31-NB"]
    b = simulate_traffic(site, START, START + 6 * 3600, seed=5)
    cls, length = b.columns["class"], b.columns["length_m"]
    lane, speed = b.columns["lane"], b.columns["speed_kph"]
    bounds = {"car": (3.5, 5.0), "lgv": (5.0, 7.0), "hgv": (10.0, 18.75), "bus": (10.0, 15.0),
              "motorcycle": (2.0, 2.5), "other": (0.1, 30.0)}
    assert set(cls.tolist()) == set(bounds)
    for name, (lo, hi) in bounds.items():
        sel = cls == name
        assert lo <= length[sel].min() and length[sel].max() <= hi, name
    assert lane.min() == 1 and lane.max() == site.lanes
    assert lane[cls == "hgv"].max() <= 2  # no HGVs in lanes 3+ of a motorway
    assert speed[cls == "hgv"].max() <= 90.0  # 56 mph limiter
    cars = speed[cls == "car"]
    assert 0.06 < cars.std() / cars.mean() < 0.2
    assert np.all(np.diff(b.ts) >= 0)


def test_fundamental_diagram() -> None:
    q = np.linspace(0, 2000, 50)
    v = free_speed(q, 110.0, 2000.0)
    assert v[0] == pytest.approx(110.0) and v[-1] == pytest.approx(82.5)
    assert np.all(np.diff(v) <= 0)
    # Congested branch: less flow goes with lower speed, and q = k * v.
    qc = np.array([600.0, 1200.0, 1800.0])
    vc = congested_speed(qc)
    assert np.all(np.diff(vc) > 0) and vc[0] < 10
    assert CAPACITY_PCU["motorway"] == 2000.0


def test_incidents_collapse_speed() -> None:
    site = REG.traffic["A282-QEII-SB"]
    day = next(d for d in range(MONDAY, MONDAY + 60) if day_state(site, d, seed=1).incident.any())
    st_ = day_state(site, day, seed=1)
    assert 10.0 <= st_.speed_kph[st_.incident].min() <= 30.0
    assert st_.speed_kph[st_.incident].max() <= 30.0
    m = int(np.flatnonzero(st_.incident)[0])
    b = simulate_traffic(site, st_.t0 + 60 * m, st_.t0 + 60 * (m + 15), seed=1)
    assert np.median(b.columns["speed_kph"]) < 35.0


def test_air_only_measured_pollutants_and_contract_ranges() -> None:
    for mon in REG.air.values():
        nearby = [REG.traffic[s] for s in mon.nearby_traffic]
        b = simulate_air(mon, nearby, START, START + DAY_S, seed=1)
        assert len(b) == 1440
        names = {k for k in b.columns if k.endswith(("_ugm3", "_mgm3"))}
        assert {n.split("_")[0] for n in names} == set(mon.pollutants)
        for name in names:
            hi = 200.0 if name == "co_mgm3" else 5000.0
            assert b.columns[name].min() >= 0.0 and b.columns[name].max() <= hi
        assert -50 <= b.columns["temperature_c"].min() <= b.columns["temperature_c"].max() <= 60
        assert 0 <= b.columns["humidity_pct"].min() <= b.columns["humidity_pct"].max() <= 100


def test_no2_follows_traffic_and_o3_moves_against_it() -> None:
    mon = REG.air["AQ-LAKESIDE"]
    nearby = [REG.traffic[s] for s in mon.nearby_traffic]
    b = simulate_air(mon, nearby, START, START + 7 * DAY_S, seed=2, episode_scale=0.0)
    no2, o3 = b.columns["no2_ugm3"], b.columns["o3_ugm3"]
    assert np.corrcoef(no2, o3)[0, 1] < -0.3
    quiet = simulate_air(mon, nearby, START, START + 7 * DAY_S, seed=2, scale=0.1,
                         episode_scale=0.0)
    assert quiet.columns["no2_ugm3"].mean() < no2.mean() - 5
    assert 15 < no2.mean() < 60
    pm25, pm10 = b.columns["pm25_ugm3"], b.columns["pm10_ugm3"]
    assert np.all(pm25 < pm10)


def test_ports_raise_so2_and_co() -> None:
    port = REG.air["AQ-TILBURY-CALCUTTA-RD"]
    b = simulate_air(port, [REG.traffic[s] for s in port.nearby_traffic], START,
                     START + 7 * DAY_S, seed=3, episode_scale=0.0)
    assert b.columns["so2_ugm3"].max() > 15  # ship plumes
    assert 0.1 < b.columns["co_mgm3"].mean() < 2.0
    assert not any("so2" in m.pollutants or "co" in m.pollutants
                   for m in REG.air.values() if not m.near_port)


def test_episodes_cross_daqi_bands() -> None:
    """With episodes made frequent, each kind pushes its mean past a DAQI band edge."""
    mon = REG.air["AQ-TILBURY-CALCUTTA-RD"]
    ts = START + 60.0 * np.arange(30 * 1440, dtype=np.float64)
    ep = episode_levels(mon, seed=1, ts=ts, hour=np.zeros(ts.size), scale=20.0)
    hourly = {p: v.reshape(-1, 60).mean(axis=1) for p, v in ep.items()}
    assert hourly["no2"].max() > 200 - 20  # plus a background of 20 and more
    assert ep["so2"].reshape(-1, 15).mean(axis=1).max() > 266
    assert np.convolve(hourly["pm25"], np.ones(24) / 24, "valid").max() > 36 - 8
    assert np.convolve(hourly["o3"], np.ones(8) / 8, "valid").max() > 100 - 50
    off = episode_levels(mon, seed=1, ts=ts, hour=np.zeros(ts.size), scale=0.0)
    assert all(not v.any() for p, v in off.items() if p != "so2")
    assert 0 < off["so2"].max() < 100  # everyday ship plumes stay
    inland = episode_levels(REG.air["AQ-GRAYS-LONDON-RD"], seed=1, ts=ts,
                            hour=np.zeros(ts.size), scale=0.0)
    assert all(not v.any() for v in inland.values())


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=820_454_400, max_value=4_000_000_000))  # the 1996+ rule
def test_uk_offset_is_bst_in_summer_only(ts: int) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    expected = datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo("Europe/London")).utcoffset()
    assert expected is not None
    assert uk_offset_s(np.array([float(ts)]))[0] == expected.total_seconds()


def test_durations_and_instants() -> None:
    assert parse_duration("24h") == 86_400.0
    assert parse_duration("1d2h3m4s") == 93_784.0
    assert parse_instant("2024-06-03T01:00:00+01:00") == START
    assert parse_instant("2024-06-03 00:00:00") == START
    for bad in ("", "ten", "-5", "0", "3x"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError):
        parse_instant("yesterday")
