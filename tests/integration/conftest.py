"""The integration session: the real local stack on test ports, started by the tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture
def make_worker(stack: StackConfig, prefix: str, tmp_path: Path) -> Iterator[object]:
    """Start workers for this test's prefix; every one is stopped at the end."""
    workers: list[Worker] = []

    def start(**env: str) -> Worker:
        w = Worker(stack, prefix, extra_env=dict(env))
        workers.append(w)  # before it starts: a worker that never got ready is stopped too
        return w.start(tmp_path)

    yield start
    for w in workers:
        w.stop()
