"""Line protocol, the retrying writer (with a fake store), settings."""

from __future__ import annotations

import asyncio

import pytest

from thurrock_streams.adapters.influx import InfluxWriter, to_line
from thurrock_streams.errors import SettingsError, SinkError
from thurrock_streams.settings import Secret, Settings


def test_traffic_line_has_contract_types_and_escaped_tags() -> None:
    line = to_line("traffic", {"site_id": 'A13, "x"=y', "window": "15m", "start": 0.0,
                               "ts": 900.0, "count": 3, "flow_vph": 12.0,
                               "mean_speed_kph": float("nan"), "p85_speed_kph": float("inf")})
    assert line == 'traffic,site_id=A13\\,\\ "x"\\=y,window=15m count=3i,flow_vph=12 900000000000'


def test_air_and_daqi_lines() -> None:
    assert to_line("air_quality", {"site_id": "S", "pollutant": "no2", "period": "1h",
                                   "ts": 3600, "mean": 41.0, "capture_pct": 100.0,
                                   "valid": True, "daqi": 1}) == (
        "air_quality,period=1h,pollutant=no2,site_id=S "
        "capture_pct=100,daqi=1i,mean=41,valid=true 3600000000000")
    assert to_line("daqi", {"measurement": "daqi", "site_id": "S", "ts": 3600, "index": 4,
                            "band": "Moderate", "pollutant": "no2"}) == (
        'daqi,site_id=S band="Moderate",index=4i,pollutant="no2" 3600000000000')


def test_record_without_fields_is_refused() -> None:
    with pytest.raises(SinkError):
        to_line("traffic", {"site_id": "S", "window": "1m", "ts": 60.0, "flow_vph": float("nan")})


def test_writer_retries_until_the_store_answers() -> None:
    calls: list[int] = []

    async def post(lines: list[str]) -> None:
        calls.append(len(lines))
        if len(calls) < 4:
            raise SinkError("store unreachable", retryable=True)

    w = InfluxWriter(Settings(sink_max_backoff_s=0.01), post=post)
    assert asyncio.run(w.write(["a", "b"])) == []
    assert calls == [2, 2, 2, 2]
    assert w.stats.retries == 3 and w.stats.written_points == 2 and w.stats.outage_since is None


def test_writer_isolates_points_the_store_refuses() -> None:
    async def post(lines: list[str]) -> None:
        if "bad" in lines:
            raise SinkError("400 bad point", retryable=False, status=400)

    w = InfluxWriter(Settings(), post=post)
    assert asyncio.run(w.write(["a", "bad", "c", "d"])) == [1]
    assert w.stats.written_points == 3 and w.stats.rejected_points == 1


def test_settings_from_env_and_secrets_never_print() -> None:
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:1", "INFLUX_TOKEN": "hunter2",
                           "ALLOWED_LATENESS_S": "12.5", "TOPIC_PREFIX": "dev-"})
    assert s.allowed_lateness_s == 12.5 and s.topic("alerts") == "dev-alerts"
    assert s.influx_token.get() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.describe())
    assert repr(Secret("x")) == "Secret('**********')"


def test_request_timeout_outlasts_the_rebalance_timeout() -> None:
    assert Settings.from_env({}).request_timeout_s == 30.0
    assert Settings.from_env({"THURROCK_REBALANCE_TIMEOUT_S": "30"}).request_timeout_s == 40.0
    assert Settings.from_env({"THURROCK_REQUEST_TIMEOUT_S": "12"}).request_timeout_s == 12.0


@pytest.mark.parametrize("env", [{"IDLE_FLUSH_S": "soon"}, {"MAX_CLOCK_SKEW_S": "-1"},
                                 {"ALLOWED_LATENESS_S": "nan"},
                                 {"KAFKA_SECURITY_PROTOCOL": "TLS"},
                                 {"THURROCK_REQUEST_TIMEOUT_S": "5"},
                                 {"THURROCK_REQUEST_TIMEOUT_S": "20",
                                  "THURROCK_REBALANCE_TIMEOUT_S": "25"}])
def test_bad_settings_are_named(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)


def test_the_web_server_listens_on_loopback_unless_told() -> None:
    assert Settings.from_env({}).web_host == "127.0.0.1"
    assert Settings.from_env({"THURROCK_WEB_HOST": "0.0.0.0"}).web_host == "0.0.0.0"
