"""Quiet roads and heartbeats on the real stack, in wall-clock time (CONTRACT.md §3).

On a night road a vehicle passes every minute or two. After ``IDLE_FLUSH_S`` of silence
the site's event time runs on with the clock, so the next vehicle is counted in its
windows (the old rule closed them all and dead-lettered it ``late``), and each window is
written about when it would have been with traffic flowing. The expected aggregates are
counted here from the vehicles sent.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pytest

from thurrock_streams.stack import StackConfig

from .feeds import T0
from .harness import poll, send, series

pytestmark = pytest.mark.integration


def counts(stack: StackConfig, site: str) -> dict[tuple[str, float], list[float]]:
    """{(window, end): [count written, ...]} for one site."""
    out: dict[tuple[str, float], list[float]] = {}
    for key, fields in series(stack, "traffic", site).items():
        tags = dict(key)
        if tags["site_id"] == site:
            for ts, v in fields.get("count", []):
                out.setdefault((tags["window"], ts), []).append(v)
    return out


def vehicle(site: str, ts: float) -> dict[str, Any]:
    return {"site_id": site, "ts": ts, "lane": 1, "speed_kph": 70.0}


def drive(stack: StackConfig, prefix: str, make_worker: Any, gaps: list[float],
          lateness: float, idle: float) -> None:
    """Send a vehicle, wait ``gap`` s, send the next...: in wall-clock time, stamped with
    the time it is sent. Then check every window up to the last vehicle's minute: zero
    late, each written once with the vehicles counted here, and about when it would have
    closed with traffic flowing (end + lateness)."""
    site = f"{prefix}A1014-NIGHT"
    w = make_worker(ALLOWED_LATENESS_S=str(lateness), IDLE_FLUSH_S=str(idle))
    topic = f"{prefix}traffic.readings"
    written_at: dict[tuple[str, float], float] = {}

    def check() -> dict[tuple[str, float], list[float]]:
        """What the store holds now; notes when each window first showed."""
        got = counts(stack, site)
        now = time.time()
        for key in got:
            written_at.setdefault(key, now)
        return got

    start = time.time()
    offset = 0.0
    sent: list[float] = []
    for gap in [0.0, *gaps]:
        offset += gap
        while time.time() < start + offset:  # watching the store meanwhile
            check()
            time.sleep(max(0.0, min(0.5, start + offset - time.time())))
        ts = round(time.time(), 3)
        send(stack, topic, [(site.encode(), vehicle(site, ts))])
        sent.append(ts)
    # every window from the first vehicle's to those ending by the last vehicle's minute
    last_minute = math.floor(sent[-1] / 60) * 60
    want: dict[tuple[str, float], int] = {}
    for size, tag in ((60, "1m"), (900, "15m")):
        first_end = math.floor(sent[0] / size) * size + size
        want |= {(tag, float(e)): 0 for e in range(first_end, last_minute + 1, size)}
        for t in sent:
            key = (tag, math.floor(t / size) * size + float(size))
            if key in want:
                want[key] += 1
    due = {key: key[1] + lateness for key in want}  # when each closes with traffic flowing
    got = poll(check, lambda g: set(want) <= set(g), max(due.values()) - time.time() + 60,
               "every window up to the last vehicle's minute")
    c = poll(lambda: w.counters()["pipelines"]["traffic"],
             lambda c: c["readings_in"] >= len(sent), 30, "every vehicle counted")
    assert c["deadlettered"] == {} and c["accepted"] == len(sent)
    assert {k: got[k] for k in want} == {k: [float(n)] for k, n in want.items()}
    # A window due less than IDLE_FLUSH_S after the last vehicle waits for the idle time
    # (at most idle - lateness past due); otherwise it closes when due; 5 s for the
    # store and the poll.
    late = {k: round(written_at[k] - due[k], 1) for k in want
            if written_at[k] > due[k] + max(0.0, idle - lateness) + 5}
    assert late == {}, "windows written later than the rule allows (s past due)"


def test_a_night_road_in_small(stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """The night road scaled down to keep CI short: gaps of 25-30 s, five times
    IDLE_FLUSH_S (5 s) and across minute boundaries, for a minute. (``make quiet-road``
    runs the full one.)"""
    drive(stack, prefix, make_worker, gaps=[25.0, 30.0, 28.0], lateness=5.0, idle=5.0)


@pytest.mark.slow
def test_a_night_road_over_a_whole_15_minute_window(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """Gaps of 1-3 minutes for 17 minutes with the default settings (30 s lateness, 60 s
    idle): at least one whole 15-minute window. ``make quiet-road`` runs it."""
    gaps = [float(g) for g in os.environ.get(
        "QUIET_ROAD_GAPS", "75,150,60,180,95,120,65,170,90,110").split(",")]
    drive(stack, prefix, make_worker, gaps=gaps, lateness=30.0, idle=60.0)


def test_a_feed_that_ends_with_a_heartbeat_is_written_at_once(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """A replayed feed from 2023 ends with a heartbeat past its last 15-minute window +
    lateness: every window is written at once (no waiting for the running watermark),
    the empty 1-minute windows up to the heartbeat included; the heartbeat counts in no
    window and apart from the readings."""
    site = f"{prefix}A128-ORSETT"
    w = make_worker(IDLE_FLUSH_S="600")
    feed: list[tuple[bytes, Any]] = [(site.encode(), vehicle(site, T0 + t))
                                     for t in (10.0, 20.0, 130.0, 890.0, 910.0)]
    feed.append((site.encode(), {"site_id": site, "ts": T0 + 1800.0 + 30, "heartbeat": True}))
    send(stack, f"{prefix}traffic.readings", feed)
    want = {("1m", T0 + 60.0 * k): 0.0 for k in range(1, 31)}
    want |= {("1m", T0 + 60.0): 2.0, ("1m", T0 + 180.0): 1.0, ("1m", T0 + 900.0): 1.0,
             ("1m", T0 + 960.0): 1.0, ("15m", T0 + 900.0): 4.0, ("15m", T0 + 1800.0): 1.0}
    got = poll(lambda: counts(stack, site), lambda g: len(g) >= len(want), 30,
               "every window, at once")
    assert got == {k: [v] for k, v in want.items()}
    c = w.counters()["pipelines"]["traffic"]
    assert (c["readings_in"], c["accepted"], c["heartbeats_in"], c["heartbeats"]) == (5, 5, 1, 1)
