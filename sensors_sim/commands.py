"""What each ``sensors-sim`` command does, given its parsed arguments."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import orjson

from thurrock_streams.registry import Registry
from thurrock_streams.settings import Settings

from .catalogue import sites_json, sites_table
from .clock import format_instant, parse_duration, parse_instant
from .faults import FAULT_KINDS, FaultRates
from .generate import FeedOptions, Summary, select_sites, write_feed
from .live import LiveRunner
from .progress import Progress, format_summary
from .publish import FileSink, KafkaSink, Sink
from .replay import Closing, file_anchor, read_jsonl
from .replay import replay as send_lines
from .webtris import webtris_lines

__all__ = ["generate", "replay", "run", "sites"]


def _faults(args: argparse.Namespace) -> FaultRates:
    return FaultRates(**{k: getattr(args, f"fault_{k}") for k in FAULT_KINDS},
                      skew_direction=args.skew_direction)


def _options(args: argparse.Namespace, start: float, duration_s: float) -> FeedOptions:
    settings = Settings.from_env()
    return FeedOptions(
        start=start, duration_s=duration_s, seed=args.seed, frames=args.frames,
        interval_s=args.interval, rate_scale=args.rate_scale, episode_scale=args.episodes,
        sites=tuple(s for s in args.sites.split(",") if s.strip()), faults=_faults(args),
        lateness_s=settings.allowed_lateness_s, max_skew_s=settings.max_clock_skew_s,
        heartbeat_s=args.heartbeat_s)


def _summary_lines(summary: Summary, elapsed: float) -> dict[str, object]:
    faults = {k: v for k, v in summary.faults.items() if v}
    dead = {k: v for k, v in summary.expected_deadletter.items() if v}
    return {
        "messages": f"{summary.messages:,}",
        "readings": f"{summary.readings:,}",
        "heartbeats": f"{summary.heartbeats:,}" if summary.heartbeats else "none",
        "faults injected": ", ".join(f"{k} {v:,}" for k, v in faults.items()) or "none",
        "expected dead letters": ", ".join(f"{k} {v:,}" for k, v in dead.items()) or "none",
        "expected accepted": f"{summary.expected_accepted:,}",
        "elapsed": f"{elapsed:.1f} s",
        "rate": f"{summary.messages / elapsed:,.0f} messages/s" if elapsed > 0 else "-",
    }


def generate(args: argparse.Namespace, registry: Registry) -> int:
    """Write a seeded feed and its summary file, then report what was written."""
    opts = _options(args, parse_instant(args.start), parse_duration(args.duration))
    t0 = time.monotonic()
    traffic, air = select_sites(registry, opts.sites)
    sim = Progress("simulating sites", len(traffic) + len(air))
    out = Progress("writing messages")

    def planned(summary: Summary) -> None:
        sim.close()
        out.total = summary.messages

    summary = write_feed(args.out, registry, opts, sim, out, planned)
    out.close()
    elapsed = time.monotonic() - t0
    info = _summary_lines(summary, elapsed)
    info["output"] = f"{args.out} (+ .summary.json)"
    print(format_summary(f"generated {format_instant(opts.start)} + {opts.duration_s:g} s, "
                         f"seed {opts.seed}", info), file=sys.stderr)
    return 0


def _sink(args: argparse.Namespace) -> Sink:
    if args.out is not None:
        return FileSink(args.out)
    return KafkaSink(args.bootstrap, args.topic_prefix)


class _Interrupt:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag the loops poll, so they stop between
    two messages, flush what they sent and print their summary."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.hit = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Callable[[], bool]:
        def handler(signum: int, frame: FrameType | None) -> None:
            del signum, frame
            self.hit = True

        for sig in self._SIGNALS:
            self._old[sig] = signal.signal(sig, handler)
        return lambda: self.hit

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def replay(args: argparse.Namespace, registry: Registry) -> int:
    """Publish a JSONL feed or a WebTRIS CSV, then report what was sent."""
    fmt = args.format
    if fmt == "auto":
        fmt = "webtris" if args.file.suffix.lower() == ".csv" else "jsonl"

    def lines() -> Iterator[dict[str, Any]]:
        if fmt == "webtris":
            return webtris_lines(args.file, registry, args.seed, args.site_id,
                                 args.csv_time == "uk", args.frames)
        return read_jsonl(args.file)

    offset = 0.0
    if args.rebase_now:
        offset = round(time.time() - file_anchor(args.file, lines()), 3)
    total = sum(1 for _ in lines())
    closing = None
    if not args.no_heartbeats:
        settings = Settings.from_env()
        closing = Closing(settings.allowed_lateness_s if args.lateness is None
                          else args.lateness, settings.max_clock_skew_s)
    sink = _sink(args)
    bar = Progress("replaying", total)
    with _Interrupt() as stopped:
        try:
            stats = send_lines(lines(), sink, speed=args.speed, offset=offset,
                               progress=bar, stop=stopped, closing=closing)
        finally:
            sink.close()
            bar.close()
    beats = f"{stats.heartbeats - stats.closing:,} from the file, {stats.closing:,} closing"
    if closing is None:
        beats += " (--no-heartbeats)"
    else:
        beats += f" (last window end + {closing.lateness_s:g} s"
        beats += f"; {stats.held:,} held at now)" if stats.held else ")"
    info: dict[str, object] = {
        "messages": f"{stats.messages:,} ({total:,} in the file)",
        "readings": f"{stats.readings:,}",
        "heartbeats": beats,
        "topics": ", ".join(f"{args.topic_prefix}{k} {v:,}" for k, v in stats.topics.items()),
        "rebased by": f"{offset:+,.3f} s" if args.rebase_now else "no",
        "elapsed": f"{stats.elapsed_s:.1f} s",
        "rate": f"{stats.rate:,.0f} messages/s",
        "sent to": str(args.out) if args.out else args.bootstrap,
    }
    summary_file = args.file.with_name(args.file.name + ".summary.json")
    if fmt == "jsonl" and summary_file.exists():
        doc = orjson.loads(summary_file.read_bytes())
        info["faults in file"] = ", ".join(
            f"{k} {v:,}" for k, v in doc.get("faults", {}).items() if v) or "none"
        info["expected dead letters"] = ", ".join(
            f"{k} {v:,}" for k, v in doc.get("expected_deadletter", {}).items() if v) or "none"
    print(format_summary(f"replayed {args.file}", info), file=sys.stderr)
    return 0


def run(args: argparse.Namespace, registry: Registry) -> int:
    """Stream live readings until stopped (or for ``--duration``), then report."""
    duration = parse_duration(args.duration) if args.duration else None
    opts = _options(args, time.time(), duration or 1.0)
    sink = _sink(args)
    bar = Progress("streaming")
    t0 = time.monotonic()
    with _Interrupt() as stopped:
        runner = LiveRunner(registry, opts, sink, stop=stopped, on_message=bar)
        try:
            summary = runner.run(duration)
        finally:
            sink.close()
            bar.close()
    info = _summary_lines(summary, time.monotonic() - t0)
    info["sent to"] = str(args.out) if args.out else args.bootstrap
    print(format_summary("stopped streaming", info), file=sys.stderr)
    return 0


def sites(args: argparse.Namespace, registry: Registry) -> int:
    """Print the site catalogue as a table or as JSON."""
    if args.json:
        sys.stdout.write(sites_json(registry, args.kind))
    else:
        sys.stdout.write(sites_table(registry, args.kind))
    return 0
