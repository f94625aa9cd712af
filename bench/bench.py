"""Throughput benchmark of Thurrock Streams on the real broker and store (issue #7).

Run through ``bench/run``. In one run it:

1. starts (or reuses) its own local stack: Tansu on ``--kafka-port`` (39192) and
   VictoriaMetrics on ``--store-port`` (38528), files under ``bench/out/stack``; it stops
   on exit only the servers it started;
2. measures the engine in-process (``bench/inproc.py``): kernel only, decode, step;
3. publishes feeds to fresh topics (traffic frames of 1,000 readings, single traffic
   readings, air frames, single air samples; 10,000 traffic sites by default);
4. runs the baseline, a plain Faust per-event agent counting readings, on the single
   traffic readings;
5. per feed, first the ceiling (``bench/ceiling.py``: a bare aiokafka consumer, ``getmany``
   and ``orjson.loads`` per message, nothing else; best of 3), then ``--worker-runs``
   (3) ``thurrock-streams worker`` processes one after another, each on its own copy of
   the feed (a topic filled beforehand); from each worker's ``/counters`` page the time
   from the first reading consumed to the last aggregate written to the store, the window
   close → store latency (p50/p99), and from ``/proc`` its peak RSS and CPU time. The
   fastest run is the feed's figure, as the ceiling's best of 3 is (runs of a second on a
   shared machine vary by a third); every run's rate is printed beside it, and the peak
   RSS is the largest of the runs;
6. after the single traffic readings, reads that worker's table changelogs back from the
   broker: changelog bytes per accepted reading;
7. runs a worker at a paced load for the close → store latency;
8. prints a table, the issue #14 targets and, last, the ``BENCH`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import feeds

from thurrock_streams import stack as stack_mod
from thurrock_streams.stack import StackConfig

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PY = sys.executable
PARTITIONS = 4
#: Issue #14, "Targets": per worker process, on this machine.
TARGETS = {"framed_rps": 1_000_000, "single_rps": 50_000, "p99_ms": 250, "rss_mb": 300,
           "changelog_vs_reading": 2.0}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.split(" (")[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- processes

@dataclass
class Child:
    """A child process in its own session; stopped (with its children) by ``stop``."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=tempfile.gettempdir(),
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def rss_peak_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# --------------------------------------------------------------------------- broker

def create_topic(bootstrap: str, name: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        admin.close()


async def _produce(bootstrap: str, topic: str, msgs: Iterable[feeds.Msg]) -> int:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                         max_batch_size=1 << 20, max_request_size=8 << 20)
    await p.start()
    n = 0
    try:
        pending = []
        for key, value in msgs:
            pending.append(await p.send(topic, value, key=key))
            n += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await p.stop()
    return n


def publish(bootstrap: str, topic: str, msgs: list[feeds.Msg]) -> None:
    t = time.perf_counter()
    create_topic(bootstrap, topic)
    asyncio.run(_produce(bootstrap, topic, msgs))
    mb = sum(len(v) for _, v in msgs) / 1e6
    log(f"published {len(msgs):,} messages ({mb:.0f} MB) to {topic} "
        f"in {time.perf_counter() - t:.1f} s")


# --------------------------------------------------------------------------- runs

@dataclass
class Feed:
    name: str           # table row
    kind: str           # traffic | air
    topic_suffix: str   # traffic.readings | air.readings
    msgs: list[feeds.Msg]
    readings: int
    windows: int | None = None  # traffic: aggregates the sink must write
    messages: int = 0           # Kafka messages (set from msgs)
    value_bytes: int = 0        # bytes of all message values (set from msgs)

    def __post_init__(self) -> None:
        self.messages = len(self.msgs)
        self.value_bytes = sum(len(v) for _, v in self.msgs)


@dataclass
class Result:
    name: str
    readings: int = 0
    seconds: float = float("nan")
    rps: float = float("nan")
    aggregates: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float = float("nan")
    cpu_s: float = float("nan")
    complete: bool = True
    note: str = ""
    ceiling_rps: float | None = None  # the ceiling on the same feed (framed rows, single rows)
    extra: dict[str, Any] = field(default_factory=dict)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def start_worker(cfg: StackConfig, prefix: str, log_name: str) -> tuple[Child, int]:
    """A ``thurrock-streams worker`` on this run's topics; returns it and its web port."""
    port = free_port()
    env = {**os.environ, **cfg.env(), "TOPIC_PREFIX": prefix, "THURROCK_APP_ID": "app",
           "IDLE_FLUSH_S": "3600", "THURROCK_TOPIC_PARTITIONS": str(PARTITIONS)}
    child = Child([PY, "-m", "thurrock_streams", "worker", "--web-port", str(port),
                   "--loglevel", "warn"], env, OUT / log_name).start()
    return child, port


def first_counters(child: Child, port: int) -> tuple[float, dict[str, Any]]:
    """Wait (up to 120 s) until the worker serves ``/counters``; (when, the page)."""
    end_wait = time.monotonic() + 120
    while True:
        if not child.alive():
            raise RuntimeError(f"worker exited:\n{child.tail()}")
        with contextlib.suppress(OSError, ValueError):
            t_page = time.time()
            return t_page, _get(f"http://127.0.0.1:{port}/counters")
        if time.monotonic() > end_wait:
            raise RuntimeError(f"worker did not serve its counters:\n{child.tail()}")
        time.sleep(0.2)


def run_worker(cfg: StackConfig, feed: Feed, prefix: str, timeout_s: float,
               profile: bool, quiet_s: float = 2.0) -> Result:
    """One worker process on a topic filled beforehand; measured from its counters page."""
    child, port = start_worker(cfg, prefix, f"worker-{slug(feed.name)}.log")
    spy: subprocess.Popen[bytes] | None = None
    res = Result(feed.name, readings=feed.readings)
    try:
        t_page, page = first_counters(child, port)
        if page["pipelines"][feed.kind]["readings_in"]:
            res.note = "consumed before the first poll (short run: rough timing) "
        if profile:
            spy = _py_spy(child.pid, feed.name)
        last_zero = t_page
        first: float | None = None
        all_in: float | None = None
        written, written_at, cpu0 = -1, 0.0, child.cpu_s()
        deadline = time.monotonic() + timeout_s
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            now = time.time()
            try:
                snap = _get(f"http://127.0.0.1:{port}/counters")
            except (OSError, ValueError):  # a long step holds the worker's loop: poll again
                if not child.alive():
                    raise RuntimeError(f"worker exited:\n{child.tail()}") from None
                continue
            c = snap["pipelines"][feed.kind]
            if c["readings_in"] == 0:
                last_zero = now
            elif first is None:
                first = last_zero
            if all_in is None and c["readings_in"] >= feed.readings:
                all_in = now
            w = snap["sink"]["written_points"]
            if w != written:
                written, written_at = w, now
            enough = ((feed.windows is None or w >= feed.windows)
                      and (c["windows_closed"] == 0 or w > 0))
            if c["readings_in"] >= feed.readings and enough and now - written_at > quiet_s:
                break
            time.sleep(0.1)
        else:
            res.complete = False
            res.note = "timed out"
        if not snap:
            raise RuntimeError(f"the worker's counters never answered:\n{child.tail()}")
        c = snap["pipelines"][feed.kind]
        first = first if first is not None else last_zero
        end = max(written_at, all_in or 0.0) if res.complete else time.time()
        res.seconds = max(end - first, 1e-9)
        res.readings = c["readings_in"]
        res.rps = res.readings / res.seconds
        res.aggregates = snap["sink"]["written_points"]
        res.p50_ms = snap["sink"]["close_to_store_ms_p50"]
        res.p99_ms = snap["sink"]["close_to_store_ms_p99"]
        res.rss_mb = child.rss_peak_mb()
        res.cpu_s = child.cpu_s() - cpu0
        res.extra = {"counters": c, "sink": snap["sink"]}
        if c["readings_in"] != c["accepted"] + sum(c["deadlettered"].values()):
            res.note += " accounting mismatch!"
        if feed.windows is not None and res.aggregates < feed.windows:
            res.note += f" {res.aggregates}/{feed.windows} aggregates"
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        child.stop()
    return res


async def _paced(bootstrap: str, topic: str, sites: list[str], ticks: int, tick_s: float,
                  rows: int) -> None:
    """Each tick, one frame per site covering the next minute of event time."""
    import numpy as np
    import orjson
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                         max_batch_size=1 << 20, max_request_size=8 << 20)
    await p.start()
    rng = np.random.default_rng(21)
    try:
        start = time.monotonic()
        for k in range(ticks):
            pending = []
            for site in sites:
                cols = feeds._traffic_rows(rng, rows, feeds.T0 + 60 * k, 60.0)
                value = orjson.dumps({"site_id": site, "columns": cols})
                pending.append(await p.send(topic, value, key=site.encode()))
            await asyncio.gather(*pending)
            await asyncio.sleep(max(0.0, start + (k + 1) * tick_s - time.monotonic()))
    finally:
        await p.stop()


def run_latency(cfg: StackConfig, prefix: str, sites: int, ticks: int, tick_s: float,
                settle_s: float = 3.0) -> Result:
    """Close → store latency at a load the worker sustains (not a backlog).

    A worker runs on an empty topic; every ``tick_s`` each site sends a frame of 1,000
    readings covering the next minute, which closes that site's previous 1-minute window.
    """
    rows = 1000
    feed_rps = sites * rows / tick_s
    topic = f"{prefix}traffic.readings"
    create_topic(cfg.bootstrap, topic)
    child, port = start_worker(cfg, prefix, "worker-latency.log")
    res = Result(f"paced {feed_rps / 1000:.0f}k rd/s: close->store", readings=sites * rows * ticks)
    try:
        first_counters(child, port)
        time.sleep(settle_s)  # let the worker finish joining its group
        t = time.time()
        cpu0 = child.cpu_s()
        asyncio.run(_paced(cfg.bootstrap, topic, feeds.site_ids(prefix.rstrip("-"), sites),
                           ticks, tick_s, rows))
        # each tick after the first closes one minute per site: wait for those in the store
        want, end = sites * (ticks - 1), time.monotonic() + 15.0
        snap = _get(f"http://127.0.0.1:{port}/counters")
        while snap["sink"]["written_points"] < want and time.monotonic() < end:
            time.sleep(0.2)
            snap = _get(f"http://127.0.0.1:{port}/counters")
        res.seconds = time.time() - t
        res.readings = snap["pipelines"]["traffic"]["readings_in"]
        res.rps = feed_rps
        res.aggregates = snap["sink"]["written_points"]
        res.p50_ms = snap["sink"]["close_to_store_ms_p50"]
        res.p99_ms = snap["sink"]["close_to_store_ms_p99"]
        res.rss_mb = child.rss_peak_mb()
        res.cpu_s = child.cpu_s() - cpu0
        res.note = "feed rate, not capacity"
    finally:
        child.stop()
    return res


def _py_spy(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    exe = Path(PY).parent / "py-spy"
    if not exe.exists():
        log("--profile: py-spy is not installed in the venv (.venv/bin/pip install py-spy)")
        return None
    out = OUT / f"profile-{slug(name)}.txt"
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "200", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_baseline(cfg: StackConfig, feed: Feed, prefix: str, timeout_s: float) -> Result:
    """The plain Faust per-event agent on the same topic, in its own consumer group."""
    result_file = OUT / f"baseline-{prefix}.json"
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": cfg.bootstrap,
           "BENCH_APP_ID": f"{prefix}baseline", "BENCH_TOPIC": f"{prefix}{feed.topic_suffix}",
           "BENCH_EXPECT": str(feed.readings), "BENCH_RESULT": str(result_file)}
    child = Child([PY, str(BENCH / "baseline_app.py"), "worker", "--web-port",
                   str(free_port()), "--loglevel", "warn"], env,
                  OUT / "baseline.log").start()
    res = Result("baseline (plain Faust agent)", readings=feed.readings)
    try:
        cpu0 = child.cpu_s()
        deadline = time.monotonic() + timeout_s
        while not result_file.exists():
            if not child.alive():
                raise RuntimeError(f"baseline exited:\n{child.tail()}")
            if time.monotonic() > deadline:
                res.complete, res.note = False, "timed out"
                return res
            time.sleep(0.1)
        time.sleep(0.05)
        r = json.loads(result_file.read_text())
        res.seconds = max(r["last"] - r["first"], 1e-9)
        res.rps = r["readings"] / res.seconds
        res.rss_mb = child.rss_peak_mb()
        res.cpu_s = child.cpu_s() - cpu0
    finally:
        child.stop()
        result_file.unlink(missing_ok=True)
    return res


def run_ceiling(cfg: StackConfig, feed: Feed, prefix: str, timeout_s: float,
                repeat: int = 1) -> Result:
    """The bare aiokafka consumer (``bench/ceiling.py``) on the feed's topic: the fastest
    of ``repeat`` runs, each a fresh process reading the whole topic from the start."""
    res = Result(f"ceiling: {feed.name.split(' (')[0]}", readings=feed.readings)
    argv = [PY, str(BENCH / "ceiling.py"), "--bootstrap", cfg.bootstrap,
            "--topic", f"{prefix}{feed.topic_suffix}", "--partitions", str(PARTITIONS),
            "--messages", str(feed.messages), "--timeout", str(timeout_s)]
    best: dict[str, Any] | None = None
    for _ in range(repeat):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 60,
                              check=False)
        try:
            r = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise RuntimeError(f"ceiling failed:\n{done.stderr[-3000:]}") from None
        if not r["complete"]:
            best = r
            break
        if best is None or r["seconds"] < best["seconds"]:
            best = r
    assert best is not None
    res.complete = bool(best["complete"])
    if not res.complete:
        res.note = f"timed out: {best['messages']:,}/{feed.messages:,} messages "
    res.seconds = max(float(best["seconds"]), 1e-9)
    res.readings = feed.readings * best["messages"] // max(feed.messages, 1)
    res.rps = res.readings / res.seconds
    res.cpu_s = float(best["cpu_s"])
    res.rss_mb = float(best["rss_mb"])
    res.note += "getmany + orjson.loads only" + (f", best of {repeat}" if repeat > 1 else "")
    return res


@dataclass
class Changelogs:
    """What a worker's table changelogs hold, read back from the broker after its run."""

    topics: dict[str, dict[str, int]]  # topic -> records, bytes, offset span
    sites_bytes: int = 0   # the readings pipelines' site tables (traffic-sites, air-sites)
    all_bytes: int = 0     # every table changelog of the worker (alert-sites too)
    compacted: bool = False  # fewer records than offsets: the bytes are a lower bound


async def _read_topic(bootstrap: str, topic: str, quiet_s: float) -> dict[str, int]:
    """Records, payload bytes (key + value + headers) and offset span of ``topic``, every
    partition from the start. The end is not taken from ListOffsets alone (Tansu's can be
    below the last record: docs/architecture.md): reading stops once every partition got
    there and then nothing came for ``quiet_s``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await c.start()
    out = {"records": 0, "bytes": 0, "offsets": 0}
    try:
        parts = c.partitions_for_topic(topic) or set(range(PARTITIONS))
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        starts = await c.beginning_offsets(tps)
        ends = await c.end_offsets(tps)
        lo: dict[Any, int] = {}
        hi: dict[Any, int] = {}
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batches = await c.getmany(timeout_ms=int(quiet_s * 500))
            for tp, recs in batches.items():
                for r in recs:
                    out["records"] += 1
                    out["bytes"] += (len(r.key or b"") + len(r.value or b"")
                                     + sum(len(k) + len(v or b"") for k, v in r.headers))
                lo.setdefault(tp, recs[0].offset)
                hi[tp] = recs[-1].offset
            now = time.monotonic()
            if batches:
                quiet_since = now
            reached = all(hi.get(tp, starts[tp] - 1) + 1 >= ends[tp] for tp in tps)
            if reached and now - quiet_since >= quiet_s:
                break
        out["offsets"] = sum(hi[tp] - lo[tp] + 1 for tp in hi)
    finally:
        await c.stop()
    return out


def read_changelogs(bootstrap: str, prefix: str, quiet_s: float = 0.5) -> Changelogs:
    """The table changelogs of the worker that ran with ``TOPIC_PREFIX=prefix``."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        names = sorted(t for t in admin.list_topics()
                       if t.startswith(prefix) and t.endswith("-changelog"))
    finally:
        admin.close()

    async def read_all() -> dict[str, dict[str, int]]:
        return {t: await _read_topic(bootstrap, t, quiet_s) for t in names}

    topics = asyncio.run(read_all())
    cl = Changelogs(topics)
    for t, v in topics.items():
        cl.all_bytes += v["bytes"]
        if t.endswith(("-traffic-sites-changelog", "-air-sites-changelog")):
            cl.sites_bytes += v["bytes"]
        cl.compacted |= v["records"] < v["offsets"]
    return cl


def run_inproc(args: argparse.Namespace, pythonpath: str | None) -> dict[str, Any]:
    argv = [PY, str(BENCH / "inproc.py"), "--sites", str(min(args.sites, 1000)),
            "--frames", str(args.inproc_frames), "--singles", str(args.inproc_singles),
            "--repeat", "1" if args.smoke else "3"]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"inproc failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def before_tree(rev: str) -> str | None:
    """Extract ``thurrock_streams`` at git revision ``rev`` into bench/out; None if impossible."""
    dest = OUT / f"before-{rev[:12]}"
    if (dest / "thurrock_streams").is_dir():
        return str(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "thurrock_streams"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"--before {rev}: cannot extract that tree ({exc}); skipped")
        return None
    return str(dest)


# --------------------------------------------------------------------------- report

def fmt(v: float | None, digits: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def best_run(tries: list[Result]) -> Result:
    """The fastest complete run of a feed's workers (any run if none completed), noting
    every run's rate; its peak RSS is the largest of them all."""
    done = [r for r in tries if r.complete] or tries
    best = max(done, key=lambda r: r.rps if r.rps == r.rps else -1.0)
    if len(tries) > 1:
        best.note = (f"fastest of {len(tries)}: "
                     + " / ".join(fmt(r.rps) for r in tries) + " " + best.note).strip()
        best.rss_mb = max(r.rss_mb for r in tries)
    return best


def table(results: list[Result], baseline: float) -> str:
    head = (f"{'run':34} {'readings':>11} {'seconds':>8} {'readings/s':>11} {'x base':>7} "
            f"{'x ceil':>7} {'aggs':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} "
            f"{'CPU us/rd':>9}  note")
    lines = [head, "-" * len(head)]
    for r in results:
        per = 1e6 * r.cpu_s / r.readings if r.readings and r.cpu_s == r.cpu_s else None
        lines.append(
            f"{r.name:34} {r.readings:>11,} {fmt(r.seconds, 2):>8} {fmt(r.rps):>11} "
            f"{fmt(r.rps / baseline if baseline else None, 1):>7} "
            f"{fmt(r.rps / r.ceiling_rps if r.ceiling_rps else None, 3):>7} "
            f"{r.aggregates:>7,} {fmt(r.p50_ms):>7} {fmt(r.p99_ms):>7} {fmt(r.rss_mb):>7} "
            f"{fmt(per, 2):>9}  {'' if r.complete else 'INCOMPLETE '}{r.note.strip()}")
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float:
    """a / b, nan when either is missing or b is 0."""
    if a is None or b is None or a != a or b != b or b == 0:
        return float("nan")
    return a / b


def targets_table(rows: list[tuple[str, float, str, bool, str]]) -> str:
    """The issue #14 "Targets" rows: figure, measured, target, met, ratios."""
    head = f"{'issue #14 target':52} {'measured':>12} {'target':>14}  {'verdict':7}  ratios"
    lines = [head, "-" * len(head)]
    for name, value, target, ok, extra in rows:
        verdict = "met" if ok else "MISSED"
        lines.append(f"{name:52} {fmt(value, 1 if abs(value) < 100 else 0):>12} "
                     f"{target:>14}  {verdict:7}  {extra}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny feeds: checks it works (< 45 s)")
    p.add_argument("--kafka-port", type=int, default=39192)
    p.add_argument("--store-port", type=int, default=38528)
    p.add_argument("--stack-dir", default=str(OUT / "stack"))
    p.add_argument("--sites", type=int, default=10_000, help="traffic sites (single readings)")
    p.add_argument("--framed-sites", type=int, default=2_000, help="traffic sites (frames)")
    p.add_argument("--frames-per-site", type=int, default=1,
                   help="traffic frames of 1,000 readings per site")
    p.add_argument("--singles-per-site", type=int, default=5)
    p.add_argument("--air-sites", type=int, default=300)
    p.add_argument("--air-singles-per-site", type=int, default=20)
    p.add_argument("--baseline-readings", type=int, default=50_000)
    p.add_argument("--latency-sites", type=int, default=20,
                   help="paced latency run: sites, each sending a 1,000-reading frame per 0.5 s")
    p.add_argument("--latency-ticks", type=int, default=30)
    p.add_argument("--no-air", action="store_true", help="skip the air runs")
    p.add_argument("--before", default="",
                   help="also measure the in-process step of this git revision")
    p.add_argument("--code-rev", default="",
                   help="measure thurrock_streams as of this git revision instead of the "
                   "working tree (e.g. the commit before the optimisations)")
    p.add_argument("--profile", action="store_true",
                   help="record each worker with py-spy into bench/out/profile-*.txt")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per run at most")
    p.add_argument("--worker-runs", type=int, default=3,
                   help="worker processes per feed, each on its own copy; the fastest counts")
    args = p.parse_args()
    if args.smoke:
        args.sites, args.framed_sites, args.frames_per_site, args.singles_per_site = 40, 40, 1, 10
        args.air_sites, args.baseline_readings, args.timeout = 10, 1000, 60.0
        args.latency_sites, args.latency_ticks = 2, 4
        args.no_air = True
        args.worker_runs = 1
    args.inproc_frames = 40 if args.smoke else 2000
    args.inproc_singles = 1000 if args.smoke else 50_000
    OUT.mkdir(parents=True, exist_ok=True)

    cfg = StackConfig(root=Path(args.stack_dir).resolve(), kafka_port=args.kafka_port,
                      store_port=args.store_port)
    t_start = time.monotonic()
    lines = stack_mod.up(cfg)
    started = any(line.endswith(")") and "started" in line for line in lines)
    for line in lines:
        log(line)
    try:
        return _bench(args, cfg, t_start)
    finally:
        if started:
            for line in stack_mod.down(cfg):
                log(line)


def _bench(args: argparse.Namespace, cfg: StackConfig, t_start: float) -> int:
    run = uuid.uuid4().hex[:8]
    prefix = f"bench{run}-"
    if args.code_rev:
        tree = before_tree(args.code_rev)
        if tree is None:
            raise SystemExit(f"cannot extract thurrock_streams at {args.code_rev}")
        os.environ["PYTHONPATH"] = tree  # the workers and inproc.py import that tree
        log(f"measuring thurrock_streams as of {args.code_rev} ({tree})")
    log("in-process engine measurements")
    inproc = run_inproc(args, os.environ.get("PYTHONPATH"))
    before: dict[str, Any] | None = None
    if args.before:
        tree = before_tree(args.before)
        if tree:
            log(f"in-process measurements of {args.before}")
            before = run_inproc(args, tree)

    sites = feeds.site_ids(run, args.sites)
    framed = list(feeds.traffic_frames(sites[:args.framed_sites], args.frames_per_site, 1000,
                                       seed=11))
    singles = list(feeds.traffic_singles(sites, args.singles_per_site, seed=12))
    runs = [
        Feed("traffic framed (1,000/frame)", "traffic", "traffic.readings", framed,
             len(framed) * 1000, feeds.traffic_windows_closed(framed)),
        Feed("traffic single readings", "traffic", "traffic.readings", singles, len(singles),
             feeds.traffic_windows_closed(singles)),
    ]
    if not args.no_air:
        air_sites = feeds.site_ids(f"{run}-air", args.air_sites)
        air_framed = list(feeds.air_frames(air_sites, 1, 1000, seed=13))
        air_singles = list(feeds.air_singles(air_sites, args.air_singles_per_site, seed=14))
        runs += [Feed("air framed (1,000/frame)", "air", "air.readings", air_framed,
                      len(air_framed) * 1000),
                 Feed("air single samples", "air", "air.readings", air_singles,
                      len(air_singles))]
    prefixes: dict[str, list[str]] = {}  # per feed, the prefix of each worker run's topics
    for i, feed in enumerate(runs):
        prefixes[feed.name] = [f"{prefix}{i}-"] + [f"{prefix}{i}r{k}-"
                                                    for k in range(2, args.worker_runs + 1)]
        for p in prefixes[feed.name]:
            publish(cfg.bootstrap, f"{p}{feed.topic_suffix}", feed.msgs)
    base_feed = Feed("baseline", "traffic", "traffic.readings",
                     singles[:args.baseline_readings], min(len(singles), args.baseline_readings))
    base_prefix = f"{prefix}base-"
    publish(cfg.bootstrap, f"{base_prefix}traffic.readings", base_feed.msgs)

    log(f"baseline: plain Faust per-event agent on {base_feed.readings:,} single readings")
    # --smoke only checks that everything works: the baseline, the ceilings and the reading
    # of the changelogs run beside the workers.
    pool = ThreadPoolExecutor(1)
    base_job = pool.submit(run_baseline, cfg, base_feed, base_prefix, args.timeout)
    if not args.smoke:
        base_job.result()
    results: list[Result] = []
    ceilings: dict[str, Result] = {}
    ceiling_jobs = {}
    changelog_job = None
    framed_changelog_job = None
    for i, feed in enumerate(runs):
        # the ceiling first, on the same topic (a consumer of its own: no group, no commit)
        ceiling_jobs[feed.name] = pool.submit(run_ceiling, cfg, feed, prefixes[feed.name][0],
                                              args.timeout, 1 if args.smoke else 3)
        if not args.smoke:
            log(f"ceiling: bare aiokafka consumer on {feed.name}, {feed.messages:,} messages")
            ceiling_jobs[feed.name].result()
        log(f"worker: {feed.name}, {feed.readings:,} readings"
            + (f", {feed.windows:,} aggregates expected" if feed.windows is not None else ""))
        tries = [run_worker(cfg, feed, p, args.timeout, args.profile and k == 0,
                            1.0 if args.smoke else 2.0)
                 for k, p in enumerate(prefixes[feed.name])]
        results.append(best_run(tries))
        feed.msgs = []
        if i == 0:  # the traffic frames: the same, for the bytes a framed reading costs
            framed_changelog_job = pool.submit(read_changelogs, cfg.bootstrap,
                                               prefixes[feed.name][0])
            if not args.smoke:
                framed_changelog_job.result()
        if i == 1:  # the single traffic readings: their worker's changelogs, from the broker
            log("reading the single-readings worker's table changelogs back from the broker")
            changelog_job = pool.submit(read_changelogs, cfg.bootstrap, prefixes[feed.name][0])
            if not args.smoke:
                changelog_job.result()

    log(f"worker: close -> store latency at a paced load ({args.latency_sites} sites)")
    lat = run_latency(cfg, f"{prefix}lat-", args.latency_sites, args.latency_ticks, 0.5,
                      1.5 if args.smoke else 3.0)
    base = base_job.result()
    for feed, res in zip(runs, results, strict=True):
        ceilings[feed.name] = ceiling_jobs[feed.name].result()
        res.ceiling_rps = ceilings[feed.name].rps
    assert changelog_job is not None
    changelogs = changelog_job.result()
    assert framed_changelog_job is not None
    framed_changelogs = framed_changelog_job.result()
    pool.shutdown()
    framed_r, single_r = results[0], results[1]
    ceil_framed, ceil_single = ceilings[runs[0].name], ceilings[runs[1].name]
    base.ceiling_rps = ceil_single.rps  # the baseline consumes the single traffic readings
    rows: list[Result] = [base]
    for feed, res in zip(runs, results, strict=True):
        rows += [ceilings[feed.name], res]
    rows.append(lat)

    b = base.rps if base.complete else float("nan")
    print()
    print(table(rows, b))
    print()
    print("in-process, no broker (readings/s):" + (" now vs --before" if before else ""))
    for k, v in inproc.items():
        if k.endswith("_rps") or k.endswith("_per_s"):
            extra = ""
            if before and k in before:
                extra = f"   before {before[k]:>12,.0f}   x{v / before[k]:.2f}"
            print(f"  {k:26} {v:>12,.0f}{extra}")
    print(f"  aggregates per 1,000 readings: {inproc['aggregates_per_1k_readings']}")

    p99 = lat.p99_ms if lat.p99_ms is not None else float("nan")
    workers = [*results, lat]
    rss = max(r.rss_mb for r in workers)
    single_feed = runs[1]
    accepted = int(single_r.extra.get("counters", {}).get("accepted", 0))
    reading_bytes = single_feed.value_bytes / max(single_feed.messages, 1)
    cl_per = ratio(changelogs.sites_bytes, accepted)
    cl_all_per = ratio(changelogs.all_bytes, accepted)
    cl_vs = ratio(cl_per, reading_bytes)
    print()
    print(f"changelogs of the single-readings worker ({accepted:,} readings accepted, "
          f"{reading_bytes:.0f} bytes per reading's message value):")
    for t, v in changelogs.topics.items():
        print(f"  {t.removeprefix(prefixes[single_feed.name][0]):40} {v['records']:>9,} records "
              f"{v['bytes']:>13,} bytes {ratio(v['bytes'], accepted):>9,.1f} bytes/reading")
    if changelogs.compacted:
        print("  (the broker compacted some records away: the bytes are a lower bound)")
    accepted_framed = int(framed_r.extra.get("counters", {}).get("accepted", 0))
    framed_reading_bytes = runs[0].value_bytes / max(runs[0].readings, 1)
    cl_framed = ratio(framed_changelogs.sites_bytes, accepted_framed)
    print(f"changelogs of the framed worker: {framed_changelogs.sites_bytes:,} bytes of site "
          f"states for {accepted_framed:,} readings accepted, {cl_framed:,.1f} bytes/reading "
          f"(a framed reading's share of its message: {framed_reading_bytes:.1f} bytes)")
    print()
    single_label = (f"single readings ({args.sites:,} sites x {args.singles_per_site}), "
                    "readings/s")
    print(targets_table([
        ("traffic frames, readings/s per worker", framed_r.rps,
         f">= {TARGETS['framed_rps']:,}", framed_r.rps >= TARGETS["framed_rps"],
         f"x{ratio(framed_r.rps, b):.2f} base, x{ratio(framed_r.rps, ceil_framed.rps):.3f} "
         f"ceiling ({fmt(ceil_framed.rps)}/s)"),
        (single_label, single_r.rps, f">= {TARGETS['single_rps']:,}",
         single_r.rps >= TARGETS["single_rps"],
         f"x{ratio(single_r.rps, b):.2f} base, x{ratio(single_r.rps, ceil_single.rps):.3f} "
         f"ceiling ({fmt(ceil_single.rps)}/s)"),
        ("p99 close -> store at paced load, ms", p99, f"<= {TARGETS['p99_ms']}",
         p99 <= TARGETS["p99_ms"], f"p50 {fmt(lat.p50_ms)} ms, {lat.name.split(':')[0]}"),
        (f"peak RSS, {args.sites:,} sites (single readings), MB", single_r.rss_mb,
         f"<= {TARGETS['rss_mb']}", single_r.rss_mb <= TARGETS["rss_mb"],
         f"largest of all worker runs {fmt(rss)} MB"),
        ("changelog bytes per accepted single reading", cl_per,
         f"<= {TARGETS['changelog_vs_reading']:g}x {reading_bytes:.0f}",
         cl_vs <= TARGETS["changelog_vs_reading"],
         f"x{cl_vs:.2f} the reading's bytes; all changelogs {cl_all_per:,.0f} bytes/reading"),
    ]))
    print(f"total bench time {time.monotonic() - t_start:.0f} s")
    report = {"results": [r.__dict__ for r in rows], "inproc": inproc, "before": before,
              "changelogs": changelogs.__dict__, "accepted_single": accepted,
              "changelogs_framed": framed_changelogs.__dict__,
              "single_reading_bytes": reading_bytes,
              "args": {k: v for k, v in vars(args).items()}}
    (OUT / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(report, indent=1, default=str))
    met = []
    for ok, text in ((framed_r.rps >= TARGETS["framed_rps"], "framed>=1M/s"),
                     (single_r.rps >= TARGETS["single_rps"], "single>=50k/s"),
                     (p99 <= TARGETS["p99_ms"], f"p99<={TARGETS['p99_ms']}ms"),
                     (single_r.rss_mb <= TARGETS["rss_mb"], "rss<=300MB"),
                     (cl_vs <= TARGETS["changelog_vs_reading"], "changelog<=2x")):
        met.append(f"{text}:{'met' if ok else 'MISSED'}")
    print("targets: " + " ".join(met))
    print(f"BENCH framed_rps={framed_r.rps:.0f} single_rps={single_r.rps:.0f} "
          f"baseline_rps={b:.0f} framed_ratio={framed_r.rps / b:.2f} "
          f"single_ratio={single_r.rps / b:.2f} p99_close_to_store_ms={p99:.0f} "
          f"rss_mb={rss:.0f} ceiling_framed_rps={ceil_framed.rps:.0f} "
          f"ceiling_single_rps={ceil_single.rps:.0f} "
          f"framed_vs_ceiling={ratio(framed_r.rps, ceil_framed.rps):.4f} "
          f"single_vs_ceiling={ratio(single_r.rps, ceil_single.rps):.4f} "
          f"baseline_vs_ceiling={ratio(b, ceil_single.rps):.4f} "
          f"rss_single_mb={single_r.rss_mb:.0f} "
          f"changelog_bytes_per_single={cl_per:.0f} single_reading_bytes={reading_bytes:.0f} "
          f"changelog_vs_reading={cl_vs:.2f} changelog_bytes_per_framed={cl_framed:.1f}")
    complete = all(r.complete for r in rows)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
