"""Row faults on one site's readings: each does what it says, and is counted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors_sim.air import simulate_air
from sensors_sim.batch import Batch
from sensors_sim.errors import UsageError
from sensors_sim.expect import out_of_range
from sensors_sim.faults import FaultRates, SiteRows, apply_row_faults
from sensors_sim.traffic import simulate_traffic
from thurrock_streams.registry import load_registry

REG = load_registry()
START = 1_717_372_800.0 + 7 * 3600
SPAN = (START, START + 4 * 3600)


def _traffic() -> Batch:
    return simulate_traffic(REG.traffic["A13-ORSETT-COCK-EB"], *SPAN, seed=1)


def _air() -> Batch:
    mon = REG.air["AQ-TILBURY-CALCUTTA-RD"]
    return simulate_air(mon, [REG.traffic[s] for s in mon.nearby_traffic], *SPAN, seed=1)


def _apply(b: Batch, seed: int = 0, anchor: float | None = None, **rates: float | str
           ) -> SiteRows:
    return apply_row_faults(b, FaultRates(**rates),  # type: ignore[arg-type]
                            np.random.default_rng(seed), SPAN, anchor)


def test_no_faults_changes_nothing() -> None:
    b = _traffic()
    out = _apply(b)
    for name, col in b.columns.items():
        assert out.batch.columns[name].tolist() == col.tolist()
    assert out.deliver.tolist() == b.ts.tolist()
    assert not any(v.any() for v in out.marks.values()) and out.dropped_ts.size == 0


def test_dropouts_cut_gaps_of_about_the_share() -> None:
    b = _air()
    out = _apply(b, seed=2, dropout=0.2)
    lost = out.dropped_ts.size
    assert lost == len(b) - len(out.batch)
    assert 0.05 * len(b) < lost < 0.4 * len(b)
    gaps = np.diff(out.batch.ts)
    assert gaps.max() >= 120.0  # at least one gap of two minutes or more


def test_stuck_values_repeat() -> None:
    b = _traffic()
    out = _apply(b, seed=4, stuck=0.3)
    hit = out.marks["stuck"]
    assert hit.sum() > 100
    speed = out.batch.columns["speed_kph"]
    idx = np.flatnonzero(hit)
    assert np.all(speed[idx] == speed[idx - 1])  # each stuck row repeats the one before
    assert np.all(out.batch.columns["class"][idx] == out.batch.columns["class"][idx - 1])
    a = _apply(_air(), seed=4, stuck=0.5)
    i = np.flatnonzero(a.marks["stuck"])
    no2, temp = a.batch.columns["no2_ugm3"], a.batch.columns["temperature_c"]
    assert i.size and np.all(no2[i] == no2[i - 1])
    assert not np.all(temp[i] == temp[i - 1])  # only the analyser is stuck


def test_duplicates_follow_their_original() -> None:
    b = _traffic()
    out = _apply(b, seed=4, duplicate=0.05)
    dup = np.flatnonzero(out.marks["duplicate"])
    assert len(out.batch) == len(b) + dup.size
    for name, col in out.batch.columns.items():
        assert col[dup].tolist() == col[dup - 1].tolist(), name


def test_spikes_are_out_of_range_and_nothing_else_is() -> None:
    for b in (_traffic(), _air()):
        out = _apply(b, seed=5, spike=0.02)
        assert out.marks["spike"].sum() > 0
        assert out_of_range(out.batch).tolist() == out.marks["spike"].tolist()


def test_out_of_order_delivery_stays_within_lateness() -> None:
    b = _traffic()
    out = _apply(b, seed=6, out_of_order=0.05)
    late = out.marks["out_of_order"]
    delay = out.deliver - out.batch.ts
    assert np.all((delay[late] >= 2.0) & (delay[late] <= 28.0))
    assert np.all(delay[~late] == 0.0)
    assert np.all(np.diff(out.deliver) >= 0)
    assert np.any(np.diff(out.batch.ts) < 0)  # the readings really are out of order
    air = _apply(_air(), seed=6, out_of_order=0.1)
    d = (air.deliver - air.batch.ts)[air.marks["out_of_order"]]
    assert np.all((d > 60.0) & (d <= 80.0))  # one sample late


def test_skew_behind_and_ahead() -> None:
    b = _traffic()
    behind = _apply(b, seed=7, skew=0.01)
    s = behind.marks["skew"]
    shift = behind.true_ts[s] - behind.batch.ts[s]
    assert s.sum() > 0 and np.all((shift >= 3600 - 0.001) & (shift <= 6 * 3600 + 0.001))
    ahead = _apply(b, seed=7, anchor=SPAN[1], skew=0.01, skew_direction="ahead")
    t = ahead.batch.ts[ahead.marks["skew"]]
    assert np.all((t >= SPAN[1] + 600 - 0.001) & (t <= SPAN[1] + 7200 + 0.001))
    live = _apply(b, seed=7, skew=0.01, skew_direction="ahead")
    s = live.marks["skew"]
    lead = live.batch.ts[s] - live.true_ts[s]
    assert np.all((lead >= 600 - 0.001) & (lead <= 7200 + 0.001))


@settings(max_examples=25, deadline=None)
@given(rates=st.fixed_dictionaries({
    k: st.floats(0, 0.1) for k in ("dropout", "stuck", "spike", "skew", "duplicate",
                                   "out_of_order")}), seed=st.integers(0, 99))
def test_counts_add_up(rates: dict[str, float], seed: int) -> None:
    b = _air()
    out = _apply(b, seed=seed, **rates)
    assert len(out.batch) == len(b) - out.dropped_ts.size + int(out.marks["duplicate"].sum())
    exclusive = out.marks["spike"].astype(int) + out.marks["skew"] + out.marks["out_of_order"]
    assert exclusive.max(initial=0) <= 1


@pytest.mark.parametrize("bad", [{"spike": -0.1}, {"dropout": 1.5},
                                 {"spike": 0.6, "skew": 0.6}])
def test_bad_rates_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        FaultRates(**bad)  # type: ignore[arg-type]
