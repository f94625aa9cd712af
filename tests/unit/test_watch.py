"""The live view's screen, from records as the processor writes them."""

from __future__ import annotations

from typing import Any

from thurrock_streams.watch import WorkerWatch, note_alert, render


def test_screen_shows_traffic_air_and_open_alerts() -> None:
    latest = {"A13 EB": {"site_id": "A13 EB", "ts": 1_699_995_660.0, "count": 12,
                         "flow_vph": 720.0, "mean_speed_kph": 88.5, "congestion_index": 0.12}}
    daqi = {"Purfleet": {"site_id": "Purfleet", "ts": 1_699_999_200.0, "index": 4,
                         "band": "Moderate", "pollutant": "no2"}}
    means = {("Purfleet", "no2/1h"): {"mean": 210.4}}
    open_alerts: dict[tuple[str, str], dict[str, Any]] = {}
    recent: list[dict[str, Any]] = []
    ev = {"site_id": "Purfleet", "rule": "daqi:no2", "severity": "moderate", "state": "raised",
          "value": 4, "threshold": 4, "ts": 1_699_999_200.0, "message": "DAQI 4 (Moderate)"}
    note_alert(open_alerts, recent, ev)
    screen = render(latest, daqi, means, None, open_alerts, recent)
    assert "A13 EB" in screen and "720" in screen and "0.12" in screen
    assert "Moderate" in screen and "210.4" in screen
    assert "alerts: 1 open" in screen and "daqi:no2" in screen and "raised" in screen
    note_alert(open_alerts, recent, {**ev, "state": "cleared", "severity": "low"})
    assert "alerts: 0 open" in render(latest, daqi, means, None, open_alerts, recent)


def test_the_screen_shows_offsets_missed_by_the_lanes_only_when_there_are_some() -> None:
    zero = {"batches": 4, "messages": 90, "stale_batches": 1, "rewinds": 0, "duplicates": 3,
            "missed": 0}
    counters: dict[str, Any] = {"pipelines": {}, "sink": {},
                                "lanes": {"air": dict(zero), "sink": dict(zero)}}
    assert "lanes" not in render({}, {}, {}, counters)
    counters["lanes"]["air"]["missed"] = 2
    counters["lanes"]["sink"]["missed"] = 1
    assert ("lanes: offsets gone by retention before they were processed: 3 (see the "
            "worker log)") in render({}, {}, {}, counters)


def test_the_view_says_when_the_worker_it_reads_is_gone() -> None:
    w = WorkerWatch("http://127.0.0.1:6066/counters")
    assert w.line(0.0) is None
    w.silent(100.0)
    assert w.line(103.4) == ("worker: no answer from http://127.0.0.1:6066/counters yet for "
                             "3 s (starting? or not running)")
    w.answered(1_700_000_000.0)  # 2023-11-14 22:13:20 UTC
    assert w.line(1_700_000_001.0) is None
    w.silent(1_700_000_002.0)
    w.silent(1_700_000_004.0)  # still silent: counted from the first silence
    gone = w.line(1_700_000_009.0)
    assert gone == ("worker: GONE - http://127.0.0.1:6066/counters has not answered for 7 s "
                    "(last answer 22:13:20 UTC); nothing new is processed until a worker runs "
                    "again")
    screen = render({}, {}, {}, None, worker=gone).splitlines()
    assert screen[1] == gone and screen[0].startswith("Thurrock Streams")
    assert "GONE" not in render({}, {}, {}, None, worker=None)
