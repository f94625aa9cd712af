"""Quiet roads and heartbeats on the real stack, in wall-clock time (CONTRACT.md §3).

On a night road a vehicle passes every minute or two. After ``IDLE_FLUSH_S`` of silence
the site's event time runs on with the clock, so the next vehicle is counted in its
windows (the old rule closed them all and dead-lettered it ``late``). The expected
aggregates are counted here from the vehicles sent, and the time §3 has each window
written is computed here from the rule (:func:`rule_written_at`): for a site that sends
only vehicles, up to ``IDLE_FLUSH_S`` past when it would close with traffic flowing (and
an empty window waits for the next vehicle); for one that also heartbeats every minute,
at most the heartbeat interval past it.
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


def beat(site: str, ts: float) -> dict[str, Any]:
    return {"site_id": site, "ts": ts, "heartbeat": True}


def rule_written_at(messages: list[tuple[float, bool]], end: float, size: int,
                    lateness: float, idle: float) -> float:
    """When CONTRACT.md §3 has the window ``[end - size, end)`` written, for a site whose
    messages ``(ts, is_heartbeat)`` arrive at the wall-clock time they are stamped with.

    Written from the contract, apart from the engine: the window closes once the watermark
    reaches ``end + lateness`` (a message stamped that late, or, after ``idle`` s with no
    message, the running watermark: last ``ts`` + the seconds since); it is written when
    it is closed and inside the span (a later reading's window, or ending at or before a
    later heartbeat), whichever comes last.
    """
    due = end + lateness
    close = math.inf
    for i, (ts, _) in enumerate(messages):
        if ts >= due:
            close = ts
            break
        nxt = messages[i + 1][0] if i + 1 < len(messages) else math.inf
        if max(ts + idle, due) < nxt:  # the running watermark gets there first
            close = max(ts + idle, due)
            break
    inside = min(ts for ts, hb in messages
                 if (ts >= end if hb else math.floor(ts / size) * size + size >= end))
    return max(close, inside)


def drive(stack: StackConfig, prefix: str, make_worker: Any, gaps: list[float],
          lateness: float, idle: float, beat_every: float | None = None) -> None:
    """Send a vehicle, wait ``gap`` s, send the next...: in wall-clock time, stamped with
    the time it is sent. Then check every window up to the last vehicle's minute: zero
    late, each written once with the vehicles counted here, and when §3 has it written
    (:func:`rule_written_at`, + 5 s for the sink, the store and the poll).

    With ``beat_every``, a second site gets the same vehicles and a heartbeat every
    ``beat_every`` s on the clock's multiples (as ``sensors-sim run`` sends them): its
    windows, the empty ones included, are also written within ``ALLOWED_LATENESS_S`` + 5 s
    of when they would close with traffic flowing (``end + ALLOWED_LATENESS_S``).
    """
    quiet = f"{prefix}A1014-NIGHT"
    beating = f"{prefix}A1014-NIGHT-HEARTBEAT"
    sites = [quiet] + ([beating] if beat_every else [])
    w = make_worker(ALLOWED_LATENESS_S=str(lateness), IDLE_FLUSH_S=str(idle))
    topic = f"{prefix}traffic.readings"
    written_at: dict[tuple[str, tuple[str, float]], float] = {}

    def check() -> dict[str, dict[tuple[str, float], list[float]]]:
        """What the store holds now; notes when each window first showed."""
        got = {site: counts(stack, site) for site in sites}
        now = time.time()
        for site, windows in got.items():
            for key in windows:
                written_at.setdefault((site, key), now)
        return got

    start = time.time()
    offset = 0.0
    sent: list[float] = []
    messages: dict[str, list[tuple[float, bool]]] = {site: [] for site in sites}
    next_beat = math.inf

    def wait_until(t: float) -> None:
        """Watch the store until ``t``, sending the heartbeats due meanwhile."""
        nonlocal next_beat
        while time.time() < t:
            check()
            if beat_every and time.time() >= next_beat:
                ts = next_beat
                send(stack, topic, [(beating.encode(), beat(beating, ts))])
                messages[beating].append((ts, True))
                next_beat += beat_every
            time.sleep(max(0.0, min(0.5, t - time.time(), next_beat - time.time())))

    for gap in [0.0, *gaps]:
        offset += gap
        wait_until(start + offset)
        ts = round(time.time(), 3)
        send(stack, topic, [(site.encode(), vehicle(site, ts)) for site in sites])
        sent.append(ts)
        for site in sites:
            messages[site].append((ts, False))
        if beat_every and next_beat == math.inf:
            next_beat = math.floor(ts / beat_every) * beat_every + beat_every
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
    sizes = {"1m": 60, "15m": 900}
    due = {key: key[1] + lateness for key in want}  # when each closes with traffic flowing
    deadline = max(due.values()) + idle + 60
    while True:
        got = check()
        if all(set(want) <= set(got[site]) for site in sites):
            break
        assert time.time() < deadline, "not every window up to the last vehicle's minute"
        wait_until(time.time() + 0.5)
    c = poll(lambda: w.counters()["pipelines"]["traffic"],
             lambda c: c["readings_in"] >= len(sent) * len(sites), 30, "every vehicle counted")
    assert c["deadlettered"] == {} and c["accepted"] == len(sent) * len(sites)
    assert c["heartbeats_in"] == sum(hb for _, hb in messages.get(beating, []))
    for site in sites:
        assert {k: got[site][k] for k in want} == {k: [float(n)] for k, n in want.items()}
    # When each window shows in the store, against when §3 has it written (and, for the
    # heartbeating site, against when it would have closed with traffic flowing).
    rule = {(site, k): rule_written_at(messages[site], k[1], sizes[k[0]], lateness, idle)
            for site in sites for k in want}
    late = {sk: (round(written_at[sk] - due[sk[1]], 1), round(rule[sk] - due[sk[1]], 1))
            for sk in rule if written_at[sk] > rule[sk] + 5.0}
    for site in sites:  # shown by ``make quiet-road`` (pytest -rP)
        past = [written_at[(site, k)] - due[k] for k in want]
        over = [written_at[(site, k)] - rule[(site, k)] for k in want]
        print(f"{site}: {len(want)} windows written {min(past):.1f}..{max(past):.1f} s past"
              f" due, {min(over):.1f}..{max(over):.1f} s after the rule's time")
    assert late == {}, "windows written later than §3 has them (s past due: seen, rule)"
    if beat_every:
        slow = {k: round(written_at[(beating, k)] - due[k], 1) for k in want
                if written_at[(beating, k)] > due[k] + lateness + 5.0}
        assert slow == {}, "heartbeating site: windows written over lateness + 5 s past due"


def test_a_night_road_in_small(stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """The night road scaled down to keep CI short: gaps of 21-23 s, over four times
    IDLE_FLUSH_S (5 s), for 66 s: across at least one minute boundary, so at least one
    whole 1-minute window. (``make quiet-road`` runs the full one.)"""
    drive(stack, prefix, make_worker, gaps=[21.0, 22.0, 23.0], lateness=5.0, idle=5.0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_night_road_over_a_whole_15_minute_window(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """Gaps of 1-3 minutes for 17 minutes with the default settings (30 s lateness, 60 s
    idle): at least one whole 15-minute window, for a detector that sends only vehicles
    and for one that also heartbeats every minute. ``make quiet-road`` runs it."""
    gaps = [float(g) for g in os.environ.get(
        "QUIET_ROAD_GAPS", "75,150,60,180,95,120,65,170,90,110").split(",")]
    drive(stack, prefix, make_worker, gaps=gaps, lateness=30.0, idle=60.0, beat_every=60.0)


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
