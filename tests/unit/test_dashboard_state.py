"""The dashboard's state class, driven by hand: expected values worked out in the comments
(docs/dashboard.md for the stale rule, docs/alerts.md for how exceedances count)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from thurrock_streams.alerts.rules import load_rules
from thurrock_streams.dashboard.config import DashboardConfig
from thurrock_streams.dashboard.state import DashboardState, Staleness
from thurrock_streams.errors import SettingsError
from thurrock_streams.registry import load_registry

T0 = 1_796_000_400.0  # a whole hour, 2026-12-01... (UTC); only differences matter


def _state(**kw: Any) -> DashboardState:
    return DashboardState(load_registry(), tuple(load_rules(None).limits), **kw)


def traffic(site: str, ts: float, window: str = "1m", **fields: Any) -> dict[str, Any]:
    size = 60.0 if window == "1m" else 900.0
    return {"site_id": site, "window": window, "start": ts - size, "ts": ts, **fields}


def mean(site: str, pollutant: str, period: str, ts: float, value: float | None,
         valid: bool = True, capture: float = 100.0) -> dict[str, Any]:
    rec: dict[str, Any] = {"measurement": "air_quality", "site_id": site,
                           "pollutant": pollutant, "period": period, "ts": ts,
                           "capture_pct": capture, "valid": valid}
    if value is not None:
        rec["mean"] = value
    return rec


def test_every_registry_site_is_listed_before_any_data() -> None:
    s = _state()
    sites = s.sites(now=T0)
    reg = load_registry()
    assert [x["site_id"] for x in sites] == [*reg.traffic, *reg.air]
    first = sites[0]
    assert first["last_seen"] is None and first["last_window_end"] is None
    assert first["stale"] is True and first["flow_vph"] is None


def test_latest_figures_come_from_the_newest_one_minute_window() -> None:
    s = _state()
    site = "A13-STIFFORD-EB"
    s.add_aggregate("traffic", traffic(site, T0 + 120, flow_vph=1800.0, mean_speed_kph=96.5,
                                       congestion_index=0.1), arrived=T0 + 150)
    # an older window arriving later does not replace the newest figures
    s.add_aggregate("traffic", traffic(site, T0 + 60, flow_vph=600.0, mean_speed_kph=50.0,
                                       congestion_index=0.6), arrived=T0 + 160)
    # a 15-minute window is in the series but not in the summary
    s.add_aggregate("traffic", traffic(site, T0 + 900, "15m", flow_vph=1200.0), arrived=T0 + 170)
    x = s.summary(site, now=T0 + 170)
    assert (x["flow_vph"], x["mean_speed_kph"], x["congestion_index"]) == (1800.0, 96.5, 0.1)
    assert x["last_window_end"] == T0 + 900 and x["last_seen"] == T0 + 170
    assert [r["ts"] for r in s.series(site, "1m")] == [T0 + 60, T0 + 120]
    assert [r["ts"] for r in s.series(site, "15m")] == [T0 + 900]
    assert s.series(site, "1h") == []
    assert s.data_as_of == T0 + 900


def test_a_rewritten_window_is_held_once_with_its_newest_value() -> None:
    s = _state()
    site = "M25-J30-NB"
    s.add_aggregate("traffic", traffic(site, T0, count=3), arrived=T0 + 1)
    s.add_aggregate("traffic", traffic(site, T0, count=3), arrived=T0 + 2)
    assert s.series(site, "1m") == [traffic(site, T0, count=3)]


def test_stale_after_the_threshold_of_wall_clock_time_not_at_it() -> None:
    s = _state(staleness=Staleness(traffic_s=180.0, air_s=1200.0))
    s.add_aggregate("traffic", traffic("A126-GRAYS-EB", T0, count=1), arrived=T0 + 10)
    s.add_aggregate("air", mean("AQ-LAKESIDE", "no2", "15m", T0, 20.0), arrived=T0 + 10)
    assert s.is_stale("A126-GRAYS-EB", now=T0 + 190) is False   # 180 s since arrival
    assert s.is_stale("A126-GRAYS-EB", now=T0 + 190.5) is True
    assert s.is_stale("AQ-LAKESIDE", now=T0 + 1210) is False     # 1200 s
    assert s.is_stale("AQ-LAKESIDE", now=T0 + 1211) is True


def test_a_site_not_in_the_registry_is_listed_from_the_topic_it_came_on() -> None:
    s = _state()
    odd = 'X, "odd"=site/1'
    assert s.add_aggregate("air", mean(odd, "pm10", "1h", T0, 12.0), arrived=T0)
    x = s.summary(odd, now=T0)
    assert (x["kind"], x["name"], x["lat"], x["lon"], x["registered"]) == \
        ("air", odd, None, None, False)
    assert s.sites(now=T0)[-1]["site_id"] == odd


def test_records_without_a_site_or_time_are_refused_and_change_nothing() -> None:
    s = _state()
    before = s.sites(now=T0)
    assert not s.add_aggregate("traffic", {"ts": T0, "window": "1m"}, arrived=T0)
    assert not s.add_aggregate("traffic", {"site_id": "A", "ts": "soon", "window": "1m"}, T0)
    assert not s.add_aggregate("traffic", {"site_id": "A", "ts": float("nan")}, T0)
    assert not s.add_aggregate("traffic", {"site_id": "A", "ts": T0, "window": "5m"}, T0)
    assert not s.add_alert({"site_id": "A", "rule": "r", "state": "opened"})
    assert s.sites(now=T0) == before and s.data_as_of is None


def test_series_keep_24_hours_of_event_time_before_the_newest_aggregate() -> None:
    s = _state()
    site = "A13-BAKER-ST-EB"
    for ts in (T0, T0 + 60, T0 + 120):
        s.add_aggregate("traffic", traffic(site, ts, count=1), arrived=ts)
    # newest is now T0 + 86460: the horizon is T0 + 60, so only T0 goes
    s.add_aggregate("traffic", traffic(site, T0 + 86460, count=1), arrived=T0 + 86460)
    assert [r["ts"] for r in s.series(site, "1m")] == [T0 + 60, T0 + 120, T0 + 86460]
    # another site's newer data moves the horizon for a site that stopped, at prune()
    s.add_aggregate("traffic", traffic("A128-ORSETT-NB", T0 + 86580, count=1), T0 + 86580)
    s.prune()
    assert [r["ts"] for r in s.series(site, "1m")] == [T0 + 86460]


def test_air_windows_split_into_15m_and_hour_end_records() -> None:
    s = _state()
    site = "AQ-GRAYS-LONDON-RD"
    q = mean(site, "so2", "15m", T0 + 900, 10.0)
    h1 = mean(site, "pm10", "1h", T0 + 3600, 30.0)
    h24 = mean(site, "pm10", "24h", T0 + 3600, 28.0)
    d = {"measurement": "daqi", "site_id": site, "ts": T0 + 3600, "index": 2, "band": "Low",
         "pollutant": "pm10"}
    for rec in (d, h24, q, h1):
        s.add_aggregate("air", rec, arrived=T0 + 3700)
    assert s.series(site, "15m") == [q]
    # oldest first; at one time, by measurement then pollutant then period
    assert s.series(site, "1h") == [h1, h24, d]
    x = s.summary(site, now=T0 + 3700)
    assert (x["daqi"], x["band"], x["pollutant"]) == (2, "Low", "pm10")
    assert [m["period"] for m in x["means"]] == ["1h", "24h", "15m"]  # pm10/1h, pm10/24h, so2/15m


def _count(s: DashboardState, site: str, rule: str) -> tuple[int | None, int]:
    got = next(c for c in s.limit_counts(site) if c["rule"] == rule)
    return got["year"], got["count"]


def test_no2_hours_over_200_count_as_the_alert_rules_count() -> None:
    s = _state()
    site = "AQ-PURFLEET-LONDON-RD"
    year_end = dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    h = 3600.0
    feed = [
        (year_end - 5 * h, 200.49, True),   # rounds to 200: not over
        (year_end - 4 * h, 200.5, True),    # rounds to 201: 1
        (year_end - 3 * h, 250.0, False),   # not valid: not counted
        (year_end - 2 * h, 201.0, True),    # 2
        (year_end - 2 * h, 201.0, True),    # the same hour again: still 2
        (year_end, 300.0, True),            # the hour 23:00-00:00 belongs to 2026: 3
    ]
    for ts, v, ok in feed:
        s.add_aggregate("air", mean(site, "no2", "1h", ts, v, valid=ok), arrived=ts)
    assert _count(s, site, "limit:no2_1h") == (2026, 3)
    # the first hour of 2027 starts the count again
    s.add_aggregate("air", mean(site, "no2", "1h", year_end + h, 210.0), arrived=year_end + h)
    assert _count(s, site, "limit:no2_1h") == (2027, 1)
    # a late 2026 hour does not touch the 2027 count
    s.add_aggregate("air", mean(site, "no2", "1h", year_end - h, 400.0), arrived=year_end + h)
    assert _count(s, site, "limit:no2_1h") == (2027, 1)


def test_pm10_days_count_only_the_24h_mean_ending_at_midnight() -> None:
    s = _state()
    site = "AQ-TILBURY-CALCUTTA-RD"
    midnight = dt.datetime(2026, 6, 2, tzinfo=dt.UTC).timestamp()
    s.add_aggregate("air", mean(site, "pm10", "24h", midnight - 3600, 80.0), midnight)
    assert _count(s, site, "limit:pm10_24h") == (None, 0)   # not a day end
    s.add_aggregate("air", mean(site, "pm10", "24h", midnight, 50.4), midnight)
    assert _count(s, site, "limit:pm10_24h") == (2026, 0)   # 50: not over 50
    s.add_aggregate("air", mean(site, "pm10", "24h", midnight + 86400, 50.5), midnight)
    assert _count(s, site, "limit:pm10_24h") == (2026, 1)


def test_alerts_open_on_raise_close_on_clear_latest_first() -> None:
    s = _state()
    def ev(site: str, rule: str, state: str, ts: float) -> dict[str, Any]:
        return {"site_id": site, "rule": rule, "severity": "moderate", "state": state,
                "value": 1, "threshold": 1, "ts": ts, "message": f"{rule} {state}"}
    a1 = ev("A13-STIFFORD-EB", "congestion", "raised", T0)
    b1 = ev("AQ-LAKESIDE", "daqi:no2", "raised", T0 + 60)
    a2 = ev("A13-STIFFORD-EB", "congestion", "escalated", T0 + 120)
    b2 = ev("AQ-LAKESIDE", "daqi:no2", "cleared", T0 + 180)
    for e in (a1, b1, a2, b2):
        assert s.add_alert(e)
    got = s.alerts()
    assert got["open"] == [a2]
    assert got["latest"] == [b2, a2, b1, a1]
    # an event of earlier event time arriving last (a replay) takes its place by time;
    # the same event read twice (after a reconnect) is folded once
    late = ev("A128-ORSETT-NB", "silent", "raised", T0 + 30)
    assert s.add_alert(late) and s.add_alert(dict(late))
    got = s.alerts()
    assert got["latest"] == [b2, a2, b1, late, a1]
    assert got["open"] == [a2, late]


def test_dashboard_settings() -> None:
    c = DashboardConfig.from_env({})
    assert (c.host, c.port, c.feed_label) == ("127.0.0.1", 8080, "")
    assert (c.staleness.traffic_s, c.staleness.air_s) == (180.0, 1200.0)
    c = DashboardConfig.from_env({"DASHBOARD_PORT": "9000", "DASHBOARD_FEED": "simulated",
                                  "DASHBOARD_STALE_TRAFFIC_S": "5"})
    assert (c.port, c.feed_label, c.staleness.traffic_s) == (9000, "SIMULATED", 5.0)
    with pytest.raises(SettingsError, match="DASHBOARD_FEED"):
        DashboardConfig.from_env({"DASHBOARD_FEED": "live"})
    with pytest.raises(SettingsError, match="DASHBOARD_PORT"):
        DashboardConfig.from_env({"DASHBOARD_PORT": "70000"})


def test_the_dashboards_kafka_options_carry_the_security_settings() -> None:
    from thurrock_streams.dashboard.feed import kafka_options
    from thurrock_streams.settings import Settings

    plain = kafka_options(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2"}))
    assert plain["bootstrap_servers"] == ["a:1", "b:2"]
    assert plain["group_id"] is None and plain["enable_auto_commit"] is False
    assert plain.get("security_protocol", "PLAINTEXT") == "PLAINTEXT"
    sasl = kafka_options(Settings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "dash", "KAFKA_SASL_PASSWORD": "s3cret"}))
    assert (sasl["security_protocol"], sasl["sasl_mechanism"], sasl["sasl_plain_username"],
            sasl["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "dash", "s3cret")
    assert sasl["ssl_context"] is not None
    assert "ssl_context" not in kafka_options(Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "dash",
         "KAFKA_SASL_PASSWORD": "s3cret"}))
