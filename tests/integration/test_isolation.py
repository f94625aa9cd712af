"""Two deployments with different TOPIC_PREFIX on one broker share no state (CONTRACT §1)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from thurrock_streams.stack import StackConfig

from .feeds import T0
from .harness import consume_all, poll, send

pytestmark = pytest.mark.integration


def test_two_prefixes_on_one_broker_with_one_app_id_are_each_exact(
        stack: StackConfig, prefix: str, make_worker: Any) -> None:
    """The same sites, the same readings, the same THURROCK_APP_ID, prefixes ``a.`` and
    ``b.``: each deployment accepts every reading and closes the same windows. (When the
    consumer group and changelogs were named from the app id alone, the second one's
    readings were all dead-lettered ``late`` against the first one's watermarks.)"""
    app_id = f"{prefix}shared"
    sites = [f"{prefix}S{i}" for i in range(10)]
    # One reading a second for 200 s per site: windows [T0, T0+60) and [T0+60, T0+120)
    # close (watermark T0+199 >= end + 30 s), with 60 readings each.
    feed = [(s.encode(), {"site_id": s, "ts": T0 + i, "lane": 1, "speed_kph": 60.0})
            for i in range(200) for s in sites]
    want = Counter({(s, T0 + 60.0): 60 for s in sites} | {(s, T0 + 120.0): 60 for s in sites})
    deployments = [f"{prefix}a.", f"{prefix}b."]
    for p in deployments:  # the second starts once the first has done its work, and
        # both then run side by side: b. must not recover a.'s site states
        w = make_worker(TOPIC_PREFIX=p, THURROCK_APP_ID=app_id, IDLE_FLUSH_S="600")
        send(stack, f"{p}traffic.readings", feed)
        c = poll(lambda w=w: w.counters()["pipelines"]["traffic"],
                 lambda c: c["readings_in"] >= len(feed), 90, f"{p}: every reading counted")
        assert (c["readings_in"], c["accepted"], c["deadlettered"]) == (len(feed), len(feed), {})
        recs = [json.loads(r.value) for r in
                consume_all(stack, f"{p}traffic.aggregates", len(want), timeout=30)]
        got = Counter({(r["site_id"], r["ts"]): r["count"] for r in recs if r["window"] == "1m"})
        assert got == want, p
