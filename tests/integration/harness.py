"""Helpers for integration tests: a real worker process, a producer, store read-back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from thurrock_streams.stack import StackConfig

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def poll(fn: Callable[[], Any], until: Callable[[Any], bool], timeout: float, what: str,
         every: float = 0.3) -> Any:
    """Call ``fn`` until ``until(value)`` holds; return that value, or fail after ``timeout``."""
    box: list[Any] = []

    def check() -> bool:
        box[:] = [fn()]
        return until(box[0])

    wait_for(check, timeout, what, every)
    return box[0]


def holds(fn: Callable[[], Any], ok: Callable[[Any], bool], seconds: float, what: str,
          every: float = 0.5) -> Any:
    """Check that ``ok(fn())`` stays true for ``seconds`` (for what must *not* happen,
    which no condition can signal); return the last value."""
    end = time.monotonic() + seconds
    while True:
        value = fn()
        assert ok(value), f"{what} no longer holds: {value!r}"[:2000]
        if time.monotonic() > end:
            return value
        time.sleep(every)


def wait_both_assigned(first: Worker, second: Worker, timeout: float = 60) -> None:
    """Wait until ``second`` has joined ``first``'s group and both hold partitions (the
    first worker's second assignment is the rebalance the newcomer caused)."""
    assigned = "Executing _on_partitions_assigned"
    wait_for(lambda: first.log().count(assigned) >= 2 and assigned in second.log(), timeout,
             "both workers to hold partitions")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    """A ``thurrock-streams worker`` subprocess with its own topic prefix and group."""

    stack: StackConfig
    prefix: str
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    web_port: int = 0
    log_path: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.stack.env(), "TOPIC_PREFIX": self.prefix,
               "THURROCK_APP_ID": "app", **self.extra_env}  # group: <prefix>app
        return env

    def start(self, tmp: Path) -> Worker:
        self.web_port = free_port()
        self.log_path = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thurrock_streams", "worker", "--web-port",
             str(self.web_port), "--loglevel",
             os.environ.get("THURROCK_TEST_WORKER_LOGLEVEL", "info")],
            env=self.env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        wait_for(lambda: self.proc.poll() is not None or "Worker]: Ready" in self.log(), 90,
                 "the worker to join its group")
        assert self.proc.poll() is None, f"worker exited:\n{self.log()[-3000:]}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def counters(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.web_port}/counters"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def metrics(self) -> dict[str, float]:
        """``/metrics`` (Prometheus text format) as {'name{labels}': value}."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def producer(stack: StackConfig) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)


def send(stack: StackConfig, topic: str, items: Iterable[tuple[bytes | None, Any]],
         partition: int | None = None) -> int:
    """Send (key, value) pairs in order; dict/list values are JSON-encoded."""
    p = producer(stack)
    n = 0
    for key, value in items:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        p.send(topic, key=key, value=raw, partition=partition)
        n += 1
    p.flush()
    p.close()
    return n


def consume_all(stack: StackConfig, topic: str, expect: int, timeout: float = 60) -> list[Any]:
    """Read ``topic`` from the start until ``expect`` records arrived (or time out)."""
    c = KafkaConsumer(topic, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=500)
    out: list[Any] = []
    end = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < end:
            for batch in c.poll(timeout_ms=300).values():
                out.extend(batch)
    finally:
        c.close()
    return out


def export(stack: StackConfig, match: str) -> list[dict[str, Any]]:
    """Every stored sample of the series matching ``match`` (VictoriaMetrics export)."""
    flush = f"{stack.store_url}/internal/force_flush"
    urllib.request.urlopen(flush, timeout=10).read()
    data = urllib.parse.urlencode({"match[]": match, "start": "0"}).encode()
    with urllib.request.urlopen(f"{stack.store_url}/api/v1/export", data=data, timeout=30) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


Points = dict[tuple[Any, ...], dict[str, list[tuple[float, float]]]]


def series(stack: StackConfig, measurement: str, site_prefix: str) -> Points:
    """Stored points of one measurement for sites starting with ``site_prefix``.

    Returns {(tag values sorted by tag name...): {field: [(ts_s, value), ...]}}.
    """
    rows = export(stack, f'{{__name__=~"{measurement}_.*",site_id=~"{_re(site_prefix)}.*"}}')
    out: Points = {}
    for row in rows:
        metric = dict(row["metric"])
        field_name = metric.pop("__name__")[len(measurement) + 1:]
        key = tuple(sorted(metric.items()))
        pts = sorted(zip((t / 1000 for t in row["timestamps"]), row["values"], strict=True))
        out.setdefault(key, {})[field_name] = pts
    return out


def _re(s: str) -> str:
    import re

    return re.escape(s).replace("\\", "\\\\").replace('"', '\\"')
