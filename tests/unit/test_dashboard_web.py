"""The dashboard's web app without Kafka (aiohttp's test server on a free loopback port):
the page's settings, the same-origin-only policy, read-only paths, percent-encoded ids."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from thurrock_streams.dashboard.config import DashboardConfig
from thurrock_streams.dashboard.web import STATE_KEY, build_app
from thurrock_streams.settings import Settings


def _run(check: Any) -> None:
    async def main() -> None:
        cfg = DashboardConfig.from_env({"DASHBOARD_FEED": "REPLAY",
                                        "DASHBOARD_STALE_TRAFFIC_S": "42"})
        app = build_app(Settings.from_env({}), cfg, with_feed=False)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await check(app, client)
    asyncio.run(main())


def test_the_page_carries_its_settings_and_forbids_other_origins() -> None:
    async def check(app: Any, client: TestClient) -> None:
        r = await client.get("/")
        page = await r.text()
        assert r.status == 200
        assert 'data-feed="REPLAY" data-stale-traffic="42" data-stale-air="1200"' in page
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp
        for path in ("/static/app.js", "/static/style.css", "/static/roads.json"):
            assert (await client.get(path)).status == 200, path
        roads = json.loads(await (await client.get("/static/roads.json")).text())
        assert {r["ref"] for r in roads["roads"]} == {"A13", "M25", "A282", "A1089", "A126",
                                                     "A1306", "A1014", "A128"}
        assert (await client.get("/static/../web.py")).status == 404
        assert (await client.post("/api/sites")).status == 405
        assert (await client.get("/healthz")).status == 503  # no feed: never caught up
    _run(check)


def test_a_percent_encoded_site_id_reaches_its_series() -> None:
    async def check(app: Any, client: TestClient) -> None:
        odd = 'X/odd site, "1"'
        rec = {"site_id": odd, "window": "1m", "ts": 120.0, "count": 1, "flow_vph": 60.0}
        app[STATE_KEY].add_aggregate("traffic", rec, arrived=130.0)
        r = await client.get("/api/sites/X%2Fodd%20site%2C%20%221%22/series?window=1m")
        assert r.status == 200 and await r.json() == [rec]
        assert (await client.get("/api/sites/X%2Fodd/series?window=1m")).status == 404
        r = await client.get("/api/sites/A13-STIFFORD-EB/series?window=1d")
        assert r.status == 400
        sites = await (await client.get("/api/sites")).json()
        assert sites[-1]["site_id"] == odd and sites[-1]["last_seen"] == 130.0
    _run(check)
