"""The integration session: the real local stack on test ports, started by the tests."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from thurrock_streams import stack as stack_mod
from thurrock_streams.stack import StackConfig

from .harness import ROOT, Worker


@pytest.fixture(scope="session")
def stack() -> Iterator[StackConfig]:
    """Start Tansu and VictoriaMetrics (or reuse ones already running on the test ports)."""
    cfg = StackConfig(
        root=Path(os.environ.get("THURROCK_TEST_STACK_DIR", ROOT / ".stack-test")),
        kafka_port=int(os.environ.get("THURROCK_TEST_KAFKA_PORT", "19092")),
        store_port=int(os.environ.get("THURROCK_TEST_STORE_PORT", "18428")),
    )
    started = any(line.endswith(")") and "started" in line for line in stack_mod.up(cfg))
    yield cfg
    if started:
        stack_mod.down(cfg)


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix (and consumer group) for one test."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, for fixtures that report failures."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _worker_report(w: Worker) -> str:
    """What a failed test's worker said: its counters (if it still runs) and the tail of
    its log (without Faust's tables of partitions)."""
    try:
        counters = json.dumps(w.counters(), sort_keys=True) if w.proc and \
            w.proc.poll() is None else f"(exited: {w.proc.returncode if w.proc else None})"
    except OSError as exc:
        counters = f"(counters unavailable: {exc})"
    lines = [ln for ln in w.log().splitlines() if not ln.startswith(("|", "+"))]
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return f"--- worker {w.log_path} counters: {counters}\n{tail}"


LOG_TAIL_LINES = 80


@pytest.fixture
def make_worker(stack: StackConfig, prefix: str, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[object]:
    """Start workers for this test's prefix; every one is stopped at the end. When the
    test failed, each worker's counters and the tail of its log are printed first (CI
    keeps only what the run prints)."""
    workers: list[Worker] = []

    def start(**env: str) -> Worker:
        w = Worker(stack, prefix, extra_env=dict(env))
        workers.append(w)  # before it starts: a worker that never got ready is stopped too
        return w.start(tmp_path)

    yield start
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for w in workers:
            print(_worker_report(w), file=sys.stderr)
    for w in workers:
        w.stop()
