"""``bench/run --smoke`` works: a short run on the session's stack prints a BENCH line.

Only that it runs and reports, the ceiling and the issue #14 rows included; the throughput
targets are never checked in CI (docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from types import ModuleType

import pytest

from thurrock_streams.stack import StackConfig

from .harness import ROOT

pytestmark = pytest.mark.integration

BENCH_LINE = re.compile(
    r"^BENCH framed_rps=(?P<framed>\d+) single_rps=(?P<single>\d+) "
    r"baseline_rps=(?P<baseline>\d+) framed_ratio=(?P<fr>\d+\.\d+) "
    r"single_ratio=(?P<sr>\d+\.\d+) p99_close_to_store_ms=(?P<p99>\d+|nan) "
    r"rss_mb=(?P<rss>\d+) ceiling_framed_rps=(?P<cf>\d+) ceiling_single_rps=(?P<cs>\d+) "
    r"framed_vs_ceiling=(?P<fvc>\d+\.\d{4}) single_vs_ceiling=(?P<svc>\d+\.\d{4}) "
    r"baseline_vs_ceiling=(?P<bvc>\d+\.\d{4}) rss_single_mb=(?P<rss_single>\d+) "
    r"changelog_bytes_per_single=(?P<cl>\d+) single_reading_bytes=(?P<rb>\d+) "
    r"changelog_vs_reading=(?P<clr>\d+\.\d{2}) "
    r"changelog_bytes_per_framed=(?P<clf>\d+\.\d)$")
TARGET_ROWS = ("traffic frames, readings/s per worker", "single readings (40 sites x 10)",
               "p99 close -> store at paced load, ms", "peak RSS, 40 sites",
               "changelog bytes per accepted single reading")


def _feeds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_feeds", ROOT / "bench" / "feeds.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(120)
def test_bench_smoke_prints_the_bench_line(stack: StackConfig) -> None:
    done = subprocess.run(
        [str(ROOT / "bench" / "run"), "--smoke", "--kafka-port", str(stack.kafka_port),
         "--store-port", str(stack.store_port), "--stack-dir", str(stack.root)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    m = BENCH_LINE.match(lines[-1])
    assert m, f"last line is not the BENCH line: {lines[-1]!r}"
    assert int(m["framed"]) > 0 and int(m["single"]) > 0 and int(m["baseline"]) > 0
    assert int(m["rss"]) > 0 and int(m["rss_single"]) > 0
    # the ceiling (getmany + orjson.loads) ran over both feeds, and does less than a worker
    assert int(m["cf"]) > int(m["framed"]) and int(m["cs"]) > int(m["single"])
    assert 0 < float(m["fvc"]) < 1 and 0 < float(m["svc"]) < 1
    # --smoke: 40 sites x 10 single readings; the mean message value of that seeded feed
    # (site ids are "bench-<8 hex>-<5 digits>", the same length in every run)
    singles = list(_feeds().traffic_singles(_feeds().site_ids("0" * 8, 40), 10, seed=12))
    assert len(singles) == 400
    assert int(m["rb"]) == round(sum(len(v) for _, v in singles) / 400)
    # the worker's site states were read back from the broker's changelog topics
    assert int(m["cl"]) > 0 and float(m["clr"]) > 0 and float(m["clf"]) > 0
    assert any(line.strip().startswith("app-traffic-sites-changelog") for line in lines)
    for row in ("ceiling: traffic framed", "ceiling: traffic single readings"):
        assert any(line.startswith(row) for line in lines), row
    for row in TARGET_ROWS:
        assert any(line.startswith(row) for line in lines), row
