"""The alert agent's table writes (issue #14): a state whose only change is its applied
offsets is not stored, and a crash at any step still replays to the same events and states.

The agent runs Faust-free (``object.__new__``) over a dict standing in for the
``alert-sites`` table; the expected events are worked out by hand from the default rules
(``data/alert_rules.toml``: congestion raised after 5 minutes at an index >= 0.5,
cleared after 5 minutes below 0.3; DAQI raised at index 4).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from thurrock_streams.agents.alerts import AlertAgent, AlertCounters, changed_records, quiet_s
from thurrock_streams.alerts.engine import AlertEngine, SiteAlerts
from thurrock_streams.alerts.rules import load_rules

T0 = 1_699_995_600  # an hour end, UTC epoch s
TRAFFIC, AIR = "traffic.aggregates", "air.aggregates"


def agent_over(table: dict[bytes, bytes]) -> AlertAgent:
    agent = object.__new__(AlertAgent)  # the Faust-free part of the agent
    agent.engine = AlertEngine(load_rules())
    agent.counters = AlertCounters()
    agent.kind_of = {TRAFFIC: "traffic", AIR: "air"}
    agent.table = table
    agent.newest, agent.last_rx, agent._index_stale = {}, {}, False
    agent._assigned_at, agent.quiet_s = 0.0, quiet_s(60.0)
    return agent


def minute(site: str, i: int, ci: float) -> dict[str, Any]:
    return {"site_id": site, "window": "1m", "start": T0 + 60 * i, "ts": T0 + 60 * (i + 1),
            "count": 10, "flow_vph": 600.0, "congestion_index": ci}


def quarter(site: str, q: int) -> dict[str, Any]:
    return {"site_id": site, "window": "15m", "start": T0 + 900 * q,
            "ts": T0 + 900 * (q + 1), "count": 150, "flow_vph": 600.0}


def feed() -> list[tuple[str, int, int, bytes]]:
    """Site A congested for minutes 0-5 then free (raise at minute 4, clear at minute 10);
    site B free; 15-minute windows and DAQI points in between that move no rule."""
    recs: list[tuple[str, dict[str, Any]]] = []
    for i in range(15):
        recs.append((TRAFFIC, minute("A", i, 0.8 if i < 6 else 0.1)))
        recs.append((TRAFFIC, minute("B", i, 0.0)))
        if i in (3, 9, 14):
            recs.append((TRAFFIC, quarter("A", 0)))  # a rewrite of the same window
            recs.append((AIR, {"measurement": "daqi", "site_id": "A", "ts": T0 + 3600,
                               "index": 2, "band": "Low", "pollutant": "no2"}))
    offsets = {TRAFFIC: 0, AIR: 0}
    out = []
    for topic, rec in recs:
        out.append((topic, 0, offsets[topic], orjson.dumps(rec)))
        offsets[topic] += 1
    return out


def step(agent: AlertAgent, table: dict[bytes, bytes], msgs: list[Any]) -> list[Any]:
    events, changed = agent.process(msgs)
    records = changed_records(table.get, changed)
    agent.counters.states_unchanged += len(changed) - len(records)
    table.update(records)
    return [(e["site_id"], e["rule"], e["state"], e["ts"]) for e in events]


def core(table: dict[bytes, bytes]) -> dict[bytes, Any]:
    """The states without their applied offsets."""
    return {k: {f: v for f, v in orjson.loads(raw).items() if f != "applied"}
            for k, raw in table.items()}


def test_a_state_that_moved_only_its_offsets_is_not_stored() -> None:
    st = SiteAlerts(rules={"congestion": {"ts": 60.0, "hi": 1, "esc": 0, "low": 0}},
                    seen={"traffic": 60.0}, applied={"traffic.aggregates:0": 7})
    stored = {b"A": orjson.dumps(st.to_json())}
    st.applied["traffic.aggregates:0"] = 9
    st.applied["air.aggregates:3"] = 2
    assert changed_records(stored.get, {"A": st}) == {}
    st.rules["congestion"]["hi"] = 2
    assert changed_records(stored.get, {"A": st}) == {b"A": orjson.dumps(st.to_json())}
    assert changed_records(stored.get, {"new": SiteAlerts()}) == {
        b"new": b'{"open":{},"rules":{},"seen":{},"applied":{}}'}
    legacy = {b"A": b'{"open":{},"rules":{},"seen":{}}'}  # no applied key: stored anew
    assert list(changed_records(legacy.get, {"A": SiteAlerts()})) == [b"A"]


def test_uninterrupted_run_gives_the_hand_worked_events_and_skips_idle_steps() -> None:
    table: dict[bytes, bytes] = {}
    agent = agent_over(table)
    msgs = feed()
    events = []
    for m in msgs:  # one aggregate a step
        events += step(agent, table, [m])
    assert events == [("A", "congestion", "raised", float(T0 + 300)),
                      ("A", "congestion", "cleared", float(T0 + 660))]
    # the three 15-minute windows and the three DAQI points of A move no rule
    assert (agent.counters.states_unchanged, agent.counters.records) == (6, len(msgs))
    assert agent.counters.replayed_skipped == 0


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_a_crash_after_any_step_replays_to_the_same_events_and_states(size: int) -> None:
    """States stored, offsets not committed yet, then ``kill -9``: the next worker rebuilds
    the table from what was stored and is handed the step's messages again (and, when
    the commit lagged, the steps before it)."""
    msgs = feed()
    whole: dict[bytes, bytes] = {}
    agent = agent_over(whole)
    want = []
    for i in range(0, len(msgs), size):
        want += step(agent, whole, msgs[i:i + size])
    for crash in range(0, len(msgs), size):
        for lag in (0, size, 3 * size):
            table: dict[bytes, bytes] = {}
            first = agent_over(table)
            got = []
            for i in range(0, crash + size, size):
                got += step(first, table, msgs[i:i + size])
            second = agent_over(dict(table))  # the changelog as stored
            committed = max(0, crash - lag)
            replay = second.table
            for i in range(committed, len(msgs), size):
                got += step(second, replay, msgs[i:i + size])
            assert got == want, (crash, lag)
            assert core(replay) == core(whole), (crash, lag)


def test_deliver_stores_only_changed_states_and_sends_events_first() -> None:
    log: list[Any] = []

    async def send_events(records: list[tuple[bytes | None, bytes]]) -> None:
        log.extend(("event", key) for key, _ in records)

    table: dict[bytes, bytes] = {}
    agent = agent_over(table)
    agent.send_events = send_events
    stored: list[dict[bytes, bytes]] = []

    async def fake_store(tbl: Any, records: dict[bytes, bytes]) -> None:
        log.append(("states", sorted(records)))
        stored.append(dict(records))
        table.update(records)

    import thurrock_streams.agents.alerts as alerts_mod
    real = alerts_mod.store_states
    alerts_mod.store_states = fake_store  # type: ignore[assignment]
    try:
        msgs = feed()
        a1 = [m for m in msgs if orjson.loads(m[3])["site_id"] == "A"][:1]
        asyncio.run(agent.step(a1))
        assert log == [("states", [b"A"])]
        quarter_only = [m for m in msgs if b'"15m"' in m[3]][:1]
        asyncio.run(agent.step(quarter_only))  # nothing moved: nothing stored
        assert log == [("states", [b"A"])] and agent.counters.states_unchanged == 1
        congested = [m for m in msgs if orjson.loads(m[3])["site_id"] == "A"
                     and b'"1m"' in m[3]][1:5]
        asyncio.run(agent.step(congested))
        assert log[1:] == [("event", b"A"), ("states", [b"A"])]
    finally:
        alerts_mod.store_states = real  # type: ignore[assignment]
