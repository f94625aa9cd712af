"""TLS to InfluxDB: the writer trusts INFLUX_CA_FILE, checked against a real HTTPS server
on loopback whose certificate a CA made in the test signed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import web

from thurrock_streams.adapters.influx import InfluxWriter
from thurrock_streams.errors import SettingsError, SinkError
from thurrock_streams.settings import Settings

from .tls import LoopbackCA, make_ca

LINE = "traffic,site_id=A13,window=1m count=2i,flow_vph=120 60000000000"


async def _write_over_tls(ca: LoopbackCA, env: dict[str, str]) -> list[tuple[str, str, str]]:
    """Start an HTTPS store on loopback, write one line through the writer, return what the
    store received: (bucket, Authorization header, body)."""
    got: list[tuple[str, str, str]] = []

    async def write(request: web.Request) -> web.Response:
        got.append((request.query.get("bucket", ""), request.headers.get("Authorization", ""),
                    await request.text()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ca.server_context())
    await site.start()
    port = runner.addresses[0][1]
    writer = InfluxWriter(Settings.from_env({"INFLUX_URL": f"https://localhost:{port}",
                                             "INFLUX_TOKEN": "tok-123", "INFLUX_BUCKET": "b",
                                             **env}))
    try:
        await writer._post_influx([LINE])
    finally:
        await writer.close()
        await runner.cleanup()
    return got


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return make_ca(tmp_path_factory.mktemp("influx-ca"))


def test_the_ca_file_is_trusted(ca: LoopbackCA) -> None:
    got = asyncio.run(_write_over_tls(ca, {"INFLUX_CA_FILE": str(ca.ca_file)}))
    assert got == [("b", "Token tok-123", LINE)]


def test_without_the_ca_the_certificate_is_refused(ca: LoopbackCA, tmp_path: Path) -> None:
    other = make_ca(tmp_path, name="Another CA")
    for env in ({}, {"INFLUX_CA_FILE": str(other.ca_file)}):
        with pytest.raises(SinkError, match="certificate verify failed") as err:
            asyncio.run(_write_over_tls(ca, env))
        assert err.value.retryable  # the writer keeps the batch and retries


def test_verification_can_be_switched_off(ca: LoopbackCA) -> None:
    got = asyncio.run(_write_over_tls(ca, {"INFLUX_VERIFY_SSL": "false"}))
    assert got == [("b", "Token tok-123", LINE)]


def test_a_missing_ca_file_stops_at_start() -> None:
    with pytest.raises(SettingsError,
                       match=re.escape("INFLUX_CA_FILE='/nonexistent/ca.pem' is not")):
        InfluxWriter(Settings.from_env({"INFLUX_CA_FILE": "/nonexistent/ca.pem"}))
