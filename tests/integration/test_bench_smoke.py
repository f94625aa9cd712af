"""``bench/run --smoke`` works: a short run on the session's stack prints a BENCH line.

Only that it runs and reports; the throughput targets are never checked in CI
(docs/performance.md).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from thurrock_streams.stack import StackConfig

from .harness import ROOT

pytestmark = pytest.mark.integration

BENCH_LINE = re.compile(
    r"^BENCH framed_rps=(?P<framed>\d+) single_rps=(?P<single>\d+) "
    r"baseline_rps=(?P<baseline>\d+) framed_ratio=(?P<fr>\d+\.\d+) "
    r"single_ratio=(?P<sr>\d+\.\d+) p99_close_to_store_ms=(?P<p99>\d+|nan) "
    r"rss_mb=(?P<rss>\d+)$")


@pytest.mark.timeout(120)
def test_bench_smoke_prints_the_bench_line(stack: StackConfig) -> None:
    done = subprocess.run(
        [str(ROOT / "bench" / "run"), "--smoke", "--kafka-port", str(stack.kafka_port),
         "--store-port", str(stack.store_port), "--stack-dir", str(stack.root)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    m = BENCH_LINE.match(last)
    assert m, f"last line is not the BENCH line: {last!r}"
    assert int(m["framed"]) > 0 and int(m["single"]) > 0 and int(m["baseline"]) > 0
    assert int(m["rss"]) > 0
