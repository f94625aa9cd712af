"""Nothing lost, nothing counted twice: kill -9 of the worker, and a store outage."""

from __future__ import annotations

from typing import Any

import pytest

from thurrock_streams import stack as stack_mod
from thurrock_streams.engine.windows import EngineConfig
from thurrock_streams.registry import load_registry
from thurrock_streams.stack import StackConfig
from thurrock_streams.traffic import TrafficPipeline

from .feeds import expected_aggregates, traffic_feed
from .harness import holds, poll, send, series, wait_both_assigned, wait_for

pytestmark = pytest.mark.integration

FIELDS = ("count", "flow_vph", "mean_speed_kph", "space_mean_speed_kph", "p85_speed_kph",
          "hgv_pct", "density_vpkm", "congestion_index")


Written = dict[tuple[str, str, float], dict[str, list[float]]]


def written(stack: StackConfig, prefix: str) -> Written:
    """{(site, window, ts): {field: [every value written]}} for this test's sites."""
    out: Written = {}
    for key, fields in series(stack, "traffic", prefix).items():
        tags = dict(key)
        for name, pts in fields.items():
            for ts, v in pts:
                out.setdefault((tags["site_id"], tags["window"], ts), {}).setdefault(
                    name, []).append(v)
    return out


def assert_same(got: Written, want: dict[tuple[str, str, float], dict[str, Any]]) -> None:
    """Same windows, same fields, and every write of a field carries the expected value.

    Identical rewrites after a crash are allowed (CONTRACT.md §3); the store keeps about
    12 significant digits, hence the relative tolerance.
    """
    assert set(got) == set(want)
    for key, rec in want.items():
        assert set(got[key]) == {f for f in FIELDS if f in rec}, key
        for f, values in got[key].items():
            assert values == [pytest.approx(float(rec[f]), rel=1e-9)] * len(values), (key, f)


def pipeline() -> TrafficPipeline:
    return TrafficPipeline(EngineConfig((60, 900), 30.0, 300.0), load_registry())


def test_kill_9_mid_feed_then_restart_gives_identical_aggregates(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    sites = [f"{prefix}S{i}" for i in range(8)]
    feed = traffic_feed(sites, minutes=40, seed=7)
    want = expected_aggregates(feed, pipeline())
    half = len(feed) // 2
    env = {"IDLE_FLUSH_S": "25"}
    first = make_worker(**env)
    send(stack, f"{prefix}traffic.readings", feed[:half])
    wait_for(lambda: written(stack, prefix), 60, "the first aggregates", every=0.05)
    first.kill9()
    send(stack, f"{prefix}traffic.readings", feed[half:])
    make_worker(**env)
    got = poll(lambda: written(stack, prefix), lambda g: len(g) >= len(want),
                   120, "every window after the restart")
    assert_same(got, want)


def test_store_outage_delays_but_loses_nothing(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    sites = [f"{prefix}S{i}" for i in range(3)]
    feed = traffic_feed(sites, minutes=20, seed=11)
    want = expected_aggregates(feed, pipeline())
    worker = make_worker(IDLE_FLUSH_S="5")
    third = len(feed) // 3
    send(stack, f"{prefix}traffic.readings", feed[:third])
    wait_for(lambda: written(stack, prefix), 60, "the first aggregates")
    store = next(s for s in stack_mod.services(stack) if s.name == "store")
    pid = stack_mod._running_pid(stack, store)
    assert pid is not None, (f"the store on port {stack.store_port} was not started from "
                             f"{stack.root}: stop the stack another checkout left running")
    stack_mod._stop_pid(pid, 10.0)
    try:
        send(stack, f"{prefix}traffic.readings", feed[third:])
        wait_for(lambda: worker.counters()["sink"]["retries"] >= 2, 60,
                 "the sink to retry against the stopped store")
        assert worker.counters()["sink"]["last_error"]
    finally:
        stack_mod.up(stack)
    got = poll(lambda: written(stack, prefix), lambda g: len(g) >= len(want),
                   120, "every window after the store came back")
    assert_same(got, want)
    assert worker.counters()["sink"]["outage_s"] == 0.0


def test_a_second_worker_takes_half_the_sites_and_flushes_only_its_own(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """Scaled out mid-feed: the newcomer recovers a standby copy of the sites it does not
    own, with their windows still open; closing those is their owner's job, so no window
    is ever written with other values than an uninterrupted run's. (The idle flush is
    longer than the pause while the second worker joins: windows flushed then would make
    the rest of the feed late.)"""
    sites = [f"{prefix}S{i}" for i in range(8)]
    feed = traffic_feed(sites, minutes=10, seed=3)
    want = expected_aggregates(feed, pipeline())
    idle = 15
    first = make_worker(IDLE_FLUSH_S=str(idle))
    half = len(feed) // 2
    send(stack, f"{prefix}traffic.readings", feed[:half])
    wait_for(lambda: written(stack, prefix), 60, "the first aggregates")
    second = make_worker(IDLE_FLUSH_S=str(idle))
    wait_both_assigned(first, second)
    send(stack, f"{prefix}traffic.readings", feed[half:])
    poll(lambda: written(stack, prefix), lambda g: len(g) >= len(want), 90, "every window")
    assert all(w.counters()["pipelines"]["traffic"]["readings_in"] > 0
               for w in (first, second)), "both workers had sites"
    # a standby copy is seen (and its idle timer starts) when the newcomer recovers, before
    # the rest of the feed: so a wrongful flush of it comes before the owner's last flush;
    # a few seconds more catch a late one
    got = holds(lambda: written(stack, prefix), lambda g: set(g) == set(want), 5,
                "no other windows")
    assert_same(got, want)
