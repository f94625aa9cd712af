"""The operators' dashboard in a real headless Chromium (Debian's, driven by
playwright-python), reading real Kafka: aggregates published to the topics by hand, and
aggregates made by a real worker from readings.

Screenshots go to artefacts/dashboard/ (git-ignored); docs/dashboard.png (README's) is
taken again by the first test when THURROCK_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from thurrock_streams import stack as stack_mod
from thurrock_streams.registry import load_registry
from thurrock_streams.stack import StackConfig

from .harness import ROOT, consume_all, free_port, poll, send, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTEFACTS = ROOT / "artefacts" / "dashboard"
STALE_TRAFFIC_S = 20.0
BANDS = ("Low", "Moderate", "High", "Very High")
A11Y_CHECKS = (Path(__file__).parent / "a11y_checks.js").read_text()


@dataclass
class Dashboard:
    """A ``thurrock-streams dashboard`` subprocess on a free port."""

    stack: StackConfig
    prefix: str
    tmp: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Dashboard:
        env = {**os.environ, **self.stack.env(), "TOPIC_PREFIX": self.prefix,
               "DASHBOARD_PORT": str(self.port), "DASHBOARD_FEED": "SIMULATED",
               "DASHBOARD_STALE_TRAFFIC_S": str(STALE_TRAFFIC_S)}
        log = (self.tmp / f"dashboard-{self.port}.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "thurrock_streams", "dashboard"],
                                     env=env, cwd=self.tmp, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self.healthy, 30, "the dashboard to catch up with the topics")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if path == "/healthz" and exc.code == 503:
                return json.loads(exc.read())
            raise

    def site(self, site_id: str) -> dict[str, Any]:
        return next(s for s in self.get("/api/sites") if s["site_id"] == site_id)

    def log(self) -> str:
        p = self.tmp / f"dashboard-{self.port}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap installs Debian's chromium "
                    "(as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def dashboards(stack: StackConfig, prefix: str, tmp_path: Path) -> Iterator[
        Callable[..., Dashboard]]:
    started: list[Dashboard] = []

    def start(port: int | None = None) -> Dashboard:
        d = Dashboard(stack, prefix, tmp_path)
        if port:
            d.port = port
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.stop()


class Page:
    """A browser page that records every request and every console error."""

    def __init__(self, browser: Any, base: str, **ctx: Any) -> None:
        self.context = browser.new_context(accept_downloads=True, **ctx)
        self.page = self.context.new_page()
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).first.text_content() or "").strip()

    def wait_text(self, selector: str, until: Callable[[str], bool], what: str,
                  timeout: float = 10) -> str:
        def get() -> str:
            loc = self.page.locator(selector)
            return str(loc.first.text_content() or "").strip() if loc.count() else ""
        return str(poll(get, until, timeout, what, every=0.1))

    def shot(self, name: str) -> Path:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTEFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def outside_origin(self) -> list[str]:
        return [u for u in self.requests if not (u.startswith(self.base + "/") or
                                                  u.startswith("blob:" + self.base)
                                                  or u.startswith("data:"))]


def _minute(t: float) -> float:
    return float(int(t) // 60 * 60)


def _traffic(site: str, ts: float, window: str, count: int, mean: float, p85: float,
             smean: float, free_flow: float = 113.0) -> dict[str, Any]:
    size = 60 if window == "1m" else 900
    flow = count * 3600 / size
    ci = round(min(max(1 - smean / free_flow, 0.0), 1.0), 4)
    return {"site_id": site, "window": window, "start": ts - size, "ts": ts, "count": count,
            "flow_vph": flow, "mean_speed_kph": mean, "space_mean_speed_kph": smean,
            "p85_speed_kph": p85, "hgv_pct": 12.5, "density_vpkm": round(flow / smean, 6),
            "congestion_index": ci}


def _mean(site: str, pollutant: str, period: str, ts: float, value: float, capture: float,
          daqi: int | None = None) -> dict[str, Any]:
    size = {"15m": 900, "1h": 3600}.get(period, 3600 * int(period[:-1]))
    rec: dict[str, Any] = {"measurement": "air_quality", "site_id": site, "pollutant": pollutant,
                           "period": period, "start": ts - size, "ts": ts,
                           "capture_pct": capture, "valid": capture >= 75.0, "mean": value}
    if daqi is not None and capture >= 75.0:
        rec["daqi"] = daqi
    return rec


def _key(rec: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    return rec["site_id"].encode(), rec


def _accessibility(p: Page) -> list[str]:
    """Our own checks (WCAG 2.1 AA, the parts a script can decide): every control has a
    name, images and the map are labelled, headings do not skip a level, text contrast is
    at least 4.5:1 against its background, nothing scrolls sideways."""
    return list(p.page.evaluate(A11Y_CHECKS))


def _csv(p: Page, chart: str) -> list[dict[str, str]]:
    button = p.page.locator(f'figure[data-chart="{chart}"] button', has_text="Download CSV")
    with p.page.expect_download() as info:
        button.click()
    path = info.value.path()
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def test_the_page_shows_the_aggregates_live_and_marks_stale_sites(
        stack: StackConfig, prefix: str, dashboards: Callable[..., Dashboard],
        browser: Any) -> None:
    t = prefix
    now = time.time()
    end = _minute(now) - 60
    busy, quiet, mon = "A13-STIFFORD-EB", "M25-J30-NB", "AQ-GRAYS-LONDON-RD"
    ones = [_traffic(busy, end - 60 * (9 - i), "1m", 20 + i, 80.0 - i, 95.0 - i, 78.43 - i)
            for i in range(10)]
    fifteen = [_traffic(busy, end // 900 * 900 - 900 * (1 - i), "15m", 300 + 10 * i, 82.0,
                        97.0, 80.5) for i in range(2)]
    stopped = _traffic(quiet, end, "1m", 30, 101.0, 110.0, 100.37)
    hour = end // 3600 * 3600
    no2 = [_mean(mon, "no2", "1h", hour - 3600 * (3 - i), v, c, d)
           for i, (v, c, d) in enumerate([(120.2, 100.0, 2), (180.4, 60.0, None),
                                          (210.7, 96.67, 4), (285.1, 100.0, 5)])]
    daqi = [{"measurement": "daqi", "site_id": mon, "ts": r["ts"], "index": r["daqi"],
             "band": "Low" if r["daqi"] <= 3 else "Moderate", "pollutant": "no2"}
            for r in no2 if "daqi" in r]
    odd = 'X/odd site, "1"'
    odd_rec = _traffic(odd, end, "1m", 1, 50.0, 50.0, 50.0, free_flow=100.0)
    # every other registered site: one window each, so every marker has something to show
    reg = load_registry()
    others = [_traffic(sid, end, "1m", 10 + i, 100.0 - 3 * i, 110.0 - 3 * i, 99.13 - 3.1 * i,
                       reg.free_flow_kph(sid))
              for i, sid in enumerate(x for x in reg.traffic if x not in (busy, quiet))]
    hours = [{"measurement": "daqi", "site_id": sid, "ts": hour, "index": i + 1,
              "band": BANDS[i // 3], "pollutant": "pm25"}
             for i, sid in enumerate(x for x in reg.air if x != mon)]
    send(stack, f"{t}traffic.aggregates", map(_key, [*ones, *fifteen, stopped, odd_rec,
                                                     *others]))
    send(stack, f"{t}air.aggregates", map(_key, [*no2, *daqi, *hours]))
    raised = {"site_id": mon, "rule": "daqi:no2", "severity": "moderate", "state": "raised",
              "value": 5, "threshold": 4, "ts": hour, "message": "NO2 DAQI 5 (Moderate)"}
    send(stack, f"{t}alerts", [_key(raised)])

    d = dashboards()
    # The JSON endpoints hold exactly what was published.
    assert d.get(f"/api/sites/{busy}/series?window=1m") == ones
    assert d.get(f"/api/sites/{busy}/series?window=15m") == fifteen
    assert d.get(f"/api/sites/{urllib.parse.quote(odd, safe='')}/series?window=1m") == [odd_rec]
    assert d.get(f"/api/sites/{mon}/series?window=1h") == sorted(
        [*no2, *daqi], key=lambda r: (r["ts"], r["measurement"]))
    s = d.site(busy)
    assert (s["flow_vph"], s["mean_speed_kph"], s["congestion_index"]) == \
        (ones[-1]["flow_vph"], ones[-1]["mean_speed_kph"], ones[-1]["congestion_index"])
    a = d.site(mon)
    assert (a["daqi"], a["band"], a["pollutant"]) == (5, "Moderate", "no2")
    # 210.7 and 285.1 are over 200; 180.4 is not (and not valid either)
    assert next(c for c in a["limits"] if c["rule"] == "limit:no2_1h")["count"] == 2
    assert d.get("/api/alerts") == {"open": [raised], "latest": [raised]}
    for path, code in ((f"/api/sites/{busy}/series?window=5m", 400),
                       ("/api/sites/NOWHERE/series?window=1m", 404)):
        with pytest.raises(urllib.error.HTTPError) as err:
            d.get(path)
        assert err.value.code == code, path

    p = Page(browser, d.url, viewport={"width": 1400, "height": 1000})
    p.page.goto(d.url + "/")
    p.wait_text("#conn", lambda s: s == "Live", "the page to go live")
    assert "SIMULATED" in p.text("#feed-mark")
    # Tab order: the skip link first, then the map's markers
    p.page.keyboard.press("Tab")
    assert p.page.evaluate("document.activeElement.textContent") == "Skip to the site panel"
    p.page.keyboard.press("Tab")
    assert p.page.evaluate("document.activeElement.closest('#map .marker') !== null")
    # The map: number and band word on each marker, equal to the aggregates.
    last = ones[-1]
    want = f"{last['congestion_index']:.2f} Busy"  # 1 - 69.43/113 = 0.3856: Busy (0.3-0.5)
    assert last["congestion_index"] == 0.3856
    p.wait_text(f'#map [data-site="{busy}"] .value', lambda s: s == want, "the busy marker")
    assert p.text(f'#map [data-site="{mon}"] .value') == "5 Moderate"
    for r in others:  # congestion bands 0.3 / 0.5 / 0.75 (docs/dashboard.md)
        ci = r["congestion_index"]
        word = "Free flow" if ci < 0.3 else "Busy" if ci < 0.5 else "Congested" if ci < 0.75 \
            else "Severe"
        assert p.text(f'#map [data-site="{r["site_id"]}"] .value') == f"{ci:.2f} {word}"
    for r in hours:
        assert p.text(f'#map [data-site="{r["site_id"]}"] .value') == f"{r['index']} {r['band']}"
    assert p.text(f'#map [data-site="{quiet}"] .value') == \
        f"{stopped['congestion_index']:.2f} Free flow"
    assert p.text("#as-of").startswith(time.strftime("%Y-%m-%d %H:%M", time.gmtime(end)))
    # The alert list, linked to its site.
    item = p.page.locator(f'#open-alerts [data-alert="{mon}|daqi:no2|raised"]')
    assert "NO2 DAQI 5 (Moderate)" in item.inner_text()
    assert item.locator("a").get_attribute("href") == f"#site={mon}"
    errors = _accessibility(p)
    assert errors == []
    p.shot("map.png")

    # Keyboard: Tab reaches the busy marker, Enter opens its panel.
    p.page.focus(f'#map [data-site="{busy}"]')
    p.page.keyboard.press("Enter")
    p.wait_text("#panel-h", lambda s: s.startswith("A13 eastbound at Stifford"), "the panel")
    for f, v in (("count", f"{last['count']}"), ("flow_vph", f"{last['flow_vph']:.0f}"),
                 ("mean_speed_kph", f"{last['mean_speed_kph']:.1f}"),
                 ("p85_speed_kph", f"{last['p85_speed_kph']:.1f}"),
                 ("congestion_index", f"{last['congestion_index']:.2f}")):
        assert p.text(f'#panel td[data-field="{f}"]') == v, f
    rows = _csv(p, "Traffic flow")
    assert [(r["series"], float(r["window_end_epoch_s"]), float(r["value"])) for r in rows] == \
        [("1-minute flow", r["ts"], r["flow_vph"]) for r in ones] + \
        [("15-minute flow", r["ts"], r["flow_vph"]) for r in fifteen]
    speed = _csv(p, "Speed")
    assert [(r["series"], float(r["value"])) for r in speed if r["series"] == "1-minute V85"] \
        == [("1-minute V85", r["p85_speed_kph"]) for r in ones]
    p.shot("traffic-panel.png")
    if os.environ.get("THURROCK_UPDATE_SCREENSHOT") == "1":
        p.page.evaluate("window.scrollTo(0, 0)")
        p.page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))

    # A new aggregate changes the page live (SSE), within 2 s of reaching Kafka.
    new = _traffic(busy, end + 60, "1m", 40, 45.0, 60.0, 44.07)  # 1 - 44.07/113 = 0.61
    send(stack, f"{t}traffic.aggregates", [_key(new)])
    sent = time.monotonic()
    p.wait_text(f'#map [data-site="{busy}"] .value', lambda s: s == "0.61 Congested",
                "the live update", timeout=5)
    assert time.monotonic() - sent < 2.0
    p.wait_text('#panel td[data-field="flow_vph"]', lambda s: s == "2400", "the panel update")

    # The air panel: limit counts, the band's health advice with source and date, CSV.
    p.page.locator(f'#open-alerts [data-alert="{mon}|daqi:no2|raised"] a').click()
    p.wait_text("#panel-h", lambda s: s.startswith("Grays"), "the air panel")
    assert p.text('#panel [data-rule="limit:no2_1h"]').endswith(": 2 of 18 allowed")
    assert p.text('#panel [data-rule="limit:pm10_24h"]').endswith(": 0 of 35 allowed")
    advice = p.text("#panel .advice")
    assert "Moderate" in advice and "19 December 2025" in advice and "GOV.UK" in advice
    rows = _csv(p, "NO₂ means")
    assert [(float(r["window_end_epoch_s"]), float(r["value"]), float(r["capture_pct"]),
             r["valid"]) for r in rows] == \
        [(r["ts"], r["mean"], r["capture_pct"], str(r["valid"]).lower()) for r in no2]
    p.shot("air-panel.png")

    # A site that stops turns stale: grey, "last seen ...", in the map and in /api/sites.
    p.wait_text(f'#map [data-site="{quiet}"] .value', lambda s: s.startswith("stale, last seen"),
                "the stopped site to turn stale", timeout=STALE_TRAFFIC_S + 10)
    assert d.site(quiet)["stale"] is True
    send(stack, f"{t}traffic.aggregates", [_key(_traffic(busy, end + 120, "1m", 40, 45.0, 60.0,
                                                         44.07))])
    p.wait_text(f'#map [data-site="{busy}"] .value', lambda s: s == "0.61 Congested",
                "the busy site to stay live")
    assert d.site(busy)["stale"] is False

    # 200% zoom: the same page in half the CSS width stays readable with no sideways scroll.
    p.page.set_viewport_size({"width": 700, "height": 900})
    assert _accessibility(p) == []
    p.shot("zoom-200.png")
    assert p.outside_origin() == []
    assert p.errors == []

    # The page survives the dashboard restarting: "reconnecting", then live again.
    d.stop()
    p.wait_text("#conn", lambda s: s.startswith("Reconnecting"), "the reconnecting state")
    d2 = dashboards(port=d.port)
    p.wait_text("#conn", lambda s: s == "Live", "the page to reconnect", timeout=15)
    p.wait_text(f'#map [data-site="{busy}"] .value', lambda s: s == "0.61 Congested",
                "the data after the restart")
    assert d2.site(busy)["last_window_end"] == end + 120
    p.context.close()


def test_a_real_workers_aggregates_reach_the_map(
        stack: StackConfig, prefix: str, make_worker: Callable[..., Any],
        dashboards: Callable[..., Dashboard], browser: Any) -> None:
    site = "A13-ORSETT-COCK-EB"  # free-flow 113 km/h in the registry
    worker = make_worker(IDLE_FLUSH_S="3600")  # no idle flush of the second window here
    d = dashboards()
    t0 = _minute(time.time()) - 240
    readings = [{"site_id": site, "ts": t0 + 5, "lane": 1, "speed_kph": 80.0, "class": "car"},
                {"site_id": site, "ts": t0 + 25, "lane": 2, "speed_kph": 100.0, "class": "hgv"},
                # the next minute's vehicle takes the watermark past t0 + 60 + 30 s lateness
                {"site_id": site, "ts": t0 + 95, "lane": 1, "speed_kph": 60.0, "class": "car"}]
    send(stack, f"{prefix}traffic.readings", map(_key, readings))
    # window [t0, t0+60): 2 vehicles, flow 120 veh/h, mean 90, harmonic mean
    # 2 / (1/80 + 1/100) = 88.889, congestion 1 - 88.889/113 = 0.2134
    got = consume_all(stack, f"{prefix}traffic.aggregates", 1, timeout=60)
    assert got, worker.log()[-2000:]
    agg = json.loads(got[0].value)
    assert (agg["ts"], agg["count"], agg["flow_vph"], agg["mean_speed_kph"]) == \
        (t0 + 60, 2, 120.0, 90.0)
    assert agg["congestion_index"] == pytest.approx(1 - (2 / (1 / 80 + 1 / 100)) / 113, abs=1e-4)
    s = poll(lambda: d.site(site), lambda s: s["last_window_end"] is not None, 10,
             "the dashboard to read the worker's aggregate")
    assert (s["flow_vph"], s["mean_speed_kph"], s["congestion_index"]) == \
        (agg["flow_vph"], agg["mean_speed_kph"], agg["congestion_index"])
    p = Page(browser, d.url, viewport={"width": 1200, "height": 900})
    p.page.goto(d.url + f"/#site={urllib.parse.quote(site, safe='')}")
    p.wait_text(f'#map [data-site="{site}"] .value', lambda s: s == "0.21 Free flow",
                "the worker's aggregate on the map")
    p.wait_text('#panel td[data-field="flow_vph"]', lambda s: s == "120", "the panel")
    assert p.outside_origin() == [] and p.errors == []
    p.shot("worker-feed.png")
    p.context.close()


def test_the_dashboard_survives_the_broker_restarting(
        stack: StackConfig, prefix: str, dashboards: Callable[..., Dashboard]) -> None:
    site = "A1089-TILBURY-NB"
    end = _minute(time.time()) - 120
    first = _traffic(site, end, "1m", 12, 70.0, 80.0, 69.0)
    send(stack, f"{prefix}traffic.aggregates", [_key(first)])
    d = dashboards()
    assert d.get(f"/api/sites/{site}/series?window=1m") == [first]
    kafka = next(s for s in stack_mod.services(stack) if s.name == "kafka")
    pid = stack_mod._running_pid(stack, kafka)
    assert pid is not None, (f"the broker on port {stack.kafka_port} was not started from "
                             f"{stack.root}: stop the stack another checkout left running")
    stack_mod._stop_pid(pid, 10.0)
    try:
        poll(lambda: d.get("/healthz"), lambda h: h["connected"] is False, 20,
             "the dashboard to notice the broker went away")
        # it goes on serving what it holds
        assert d.get(f"/api/sites/{site}/series?window=1m") == [first]
    finally:
        stack_mod.up(stack)
    second = _traffic(site, end + 60, "1m", 30, 50.0, 60.0, 49.0)
    send(stack, f"{prefix}traffic.aggregates", [_key(second)])
    got = poll(lambda: d.get(f"/api/sites/{site}/series?window=1m"),
               lambda s: second in s, 40, "the aggregate sent after the restart")
    assert got[-1] == second and got.count(second) == 1
    assert d.get("/healthz")["connected"] is True
