"""The dashboard's web app (aiohttp): the page, its static files, the JSON endpoints of
CONTRACT.md §9 and the server-sent event stream. Nothing here changes state."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from ..alerts.rules import load_rules
from ..registry import load_registry
from ..settings import Settings
from .config import DashboardConfig
from .feed import Feed
from .state import SERIES_WINDOWS, DashboardState

__all__ = ["build_app", "run"]

log = logging.getLogger(__name__)

STATIC = {"app.js": "application/javascript", "style.css": "text/css"}
#: Every response forbids the page any request outside the dashboard's own origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
QUEUE_MAX = 10000

FEED_KEY = web.AppKey("feed", Feed)
STATE_KEY = web.AppKey("state", DashboardState)
Hub = set[asyncio.Queue[bytes | None]]
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub")
CONFIG_KEY = web.AppKey("config", DashboardConfig)
BOOT_KEY = web.AppKey("boot", str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, allow_nan=False, ensure_ascii=False),
                        status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _static_text(name: str) -> str:
    return resources.files("thurrock_streams").joinpath(f"dashboard/static/{name}"
                                                         ).read_text("utf-8")


async def index(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    page = _static_text("index.html")
    attrs = (f'data-feed="{html.escape(cfg.feed_label)}" '
             f'data-stale-traffic="{cfg.staleness.traffic_s:g}" '
             f'data-stale-air="{cfg.staleness.air_s:g}"')
    return web.Response(text=page.replace('data-config=""', attrs), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "roads.json":
        text = resources.files("thurrock_streams").joinpath("data/roads.json").read_text("utf-8")
        return web.Response(text=text, content_type="application/json")
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(text=_static_text(name), content_type=STATIC[name],
                        headers={"Cache-Control": "no-cache"})


async def sites(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].sites(time.time()))


def _site_id(request: web.Request) -> str:
    # Take the site_id from the raw path, so a percent-encoded "/" stays inside it.
    raw = request.raw_path.split("?", 1)[0]
    return unquote(raw[len("/api/sites/"):-len("/series")])


async def series(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    site_id = _site_id(request)
    window = request.query.get("window", "")
    if window not in SERIES_WINDOWS:
        return _json({"error": "window must be one of 1m, 15m, 1h"}, 400)
    if not state.has_site(site_id):
        return _json({"error": f"unknown site {site_id!r}"}, 404)
    return _json(state.series(site_id, window))


async def alerts(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].alerts())


async def healthz(request: web.Request) -> web.Response:
    feed = request.app[FEED_KEY]
    body = {"caught_up": feed.caught_up, "connected": feed.connected,
            "bad_records": feed.bad_records}
    return _json(body, 200 if feed.caught_up else 503)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_MAX)
    hub = request.app[HUB_KEY]
    hub.add(queue)
    try:
        await resp.write(b"retry: 2000\n" + _event("hello", {"boot": request.app[BOOT_KEY]}))
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), 15.0)
            except TimeoutError:
                msg = b": keep-alive\n\n"
            if msg is None:  # too slow a reader, or shutting down: it reconnects
                break
            await resp.write(msg)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.discard(queue)
    return resp


def _broadcaster(app: web.Application) -> Any:
    state, hub = app[STATE_KEY], app[HUB_KEY]

    def on_record(kind: str, rec: dict[str, Any]) -> None:
        if not hub:
            return
        if kind == "alerts":
            msg = _event("alert", {"event": rec})
        else:
            msg = _event("aggregate", {"kind": kind, "record": rec,
                                       "site": state.summary(rec["site_id"], time.time())})
        for q in list(hub):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:
                hub.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)

    return on_record


async def _feed_ctx(app: web.Application) -> AsyncIterator[None]:
    feed = app[FEED_KEY]
    feed.listeners.append(_broadcaster(app))
    task = asyncio.create_task(feed.run(), name="dashboard-feed")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    hub: Hub = app[HUB_KEY]
    for q in list(hub):
        with contextlib.suppress(asyncio.QueueFull):
            q.put_nowait(None)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    resp = await handler(request)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def build_app(settings: Settings, config: DashboardConfig,
              with_feed: bool = True) -> web.Application:
    """The web app with its Kafka feed (started with the app; ``with_feed=False`` for
    tests of the pages alone)."""
    rules = load_rules(settings.alert_rules_file or None)
    state = DashboardState(load_registry(), tuple(rules.limits), config.staleness)
    app = web.Application(middlewares=[_headers])
    app[STATE_KEY] = state
    app[FEED_KEY] = Feed(settings, state)
    hub: Hub = set()
    app[HUB_KEY] = hub
    app[CONFIG_KEY] = config
    app[BOOT_KEY] = uuid.uuid4().hex
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/sites", sites)
    app.router.add_get(r"/api/sites/{site_id:.+}/series", series)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/healthz", healthz)
    if with_feed:
        app.cleanup_ctx.append(_feed_ctx)
    return app


def run(settings: Settings, config: DashboardConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = build_app(settings, config)
    url = f"http://{config.host}:{config.port}/"
    print(f"dashboard: {url} (reading {settings.kafka_bootstrap_servers}, topic prefix "
          f"{settings.topic_prefix!r})", flush=True)
    web.run_app(app, host=config.host, port=config.port, print=None,
                access_log=None, shutdown_timeout=3.0, handle_signals=True)
    log.info("dashboard at %s stopped", url)
