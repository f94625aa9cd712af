"""The ``sensors-sim`` console script: argument parsing for generate, replay, run and sites."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from thurrock_streams.errors import ThurrockError
from thurrock_streams.registry import Registry, load_registry

from . import commands
from .errors import UsageError

__all__ = ["build_parser", "main"]

DEFAULT_START = "2024-06-03T00:00:00Z"  # a Monday; fixed so equal arguments give equal bytes
_FAULT_HELP = {
    "dropout": "share of each site's time lost in 1-20 min gaps (not an error)",
    "stuck": "share of each site's time in 5-60 min spells of repeated values (valid)",
    "spike": "chance per reading of an out-of-range value (dead-letter reason: range)",
    "skew": "chance per reading of a skewed clock (behind: usually late; ahead: future)",
    "duplicate": "chance per reading of being sent twice (both are counted; not an error)",
    "out-of-order": "chance per reading of arriving 2-28 s late (air: one sample late); "
                    "within the allowed lateness, so not an error",
    "malformed": "chance per message of bad bytes (reason: decode) or a missing/mistyped "
                 "field (reason: schema), half each",
    "wrong-key": "chance per message of another site's key or none (the processor re-keys)",
}


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds >= 0")
    return value


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 'max' or a number such as 10") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def _add_model(p: argparse.ArgumentParser, seed_help: str) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--seed", type=int, default=0, metavar="N", help=seed_help)
    g.add_argument("--sites", default="", metavar="IDS",
                   help="comma-separated site ids or shell patterns, e.g. 'A13-*,AQ-TILBURY-*' "
                        "(default: every site in the registry; see `sensors-sim sites`)")
    g.add_argument("--frames", type=int, default=0, metavar="N",
                   help="send frames of up to N readings of one site per message "
                        "(default: one reading per message)")
    g.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                   help="air-monitor sampling interval in seconds (default: 60)")
    g.add_argument("--rate-scale", type=float, default=1.0, metavar="X",
                   help="multiply traffic demand (AADT) by X (default: 1.0)")
    g.add_argument("--episodes", type=float, default=1.0, metavar="X",
                   help="multiply the rate of pollution episodes by X; 0 turns them off "
                        "(default: 1.0, a few a month)")


def _add_faults(p: argparse.ArgumentParser, skew_default: str) -> None:
    g = p.add_argument_group("faults (none unless asked for; each a rate between 0 and 1)")
    for kind, text in _FAULT_HELP.items():
        g.add_argument(f"--fault-{kind}", type=_rate, default=0.0, metavar="RATE", help=text)
    g.add_argument("--skew-direction", choices=("behind", "ahead"), default=skew_default,
                   help="skewed clocks run 1-6 h behind, or 10 min-2 h ahead "
                        f"(default: {skew_default})")


def _add_kafka(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
                   or "127.0.0.1:9092", metavar="HOST:PORT",
                   help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or "
                        "127.0.0.1:9092); SASL/SSL from the KAFKA_* settings")
    g.add_argument("--topic-prefix", default=os.environ.get("TOPIC_PREFIX", ""),
                   metavar="PREFIX", help="put before every topic name (default: $TOPIC_PREFIX)")
    g.add_argument("--out", type=Path, metavar="FILE",
                   help="write JSONL lines to FILE instead of publishing to Kafka")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with its four subcommands."""
    parser = argparse.ArgumentParser(
        prog="sensors-sim", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Simulate, record and replay Thurrock roadside sensor feeds: per-vehicle "
                    "traffic detections on traffic.readings and air-quality samples on "
                    "air.readings (CONTRACT.md §2). See docs/simulator.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="write a seeded, reproducible feed to a JSONL file",
                         description="Write a seeded feed to FILE.jsonl (one message a line: "
                                     '{"topic", "key", "value"}) and FILE.jsonl.summary.json. '
                                     "Equal arguments give byte-identical files.")
    gen.add_argument("--start", default=DEFAULT_START, metavar="ISO-8601",
                     help=f"first instant, e.g. 2024-06-03T00:00:00Z (default: {DEFAULT_START})")
    gen.add_argument("--duration", default="24h", metavar="SPAN",
                     help="how much event time, e.g. 24h, 90m, 1h30m, 2d, 3600 (default: 24h)")
    gen.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl",
                     help="output file (its summary goes to FILE.jsonl.summary.json)")
    _add_model(gen, "random seed; equal seeds give equal files (default: 0)")
    gen.add_argument("--heartbeat-s", type=_seconds, default=0.0, metavar="SECONDS",
                     help="also write a heartbeat per site every SECONDS of event time, at "
                          "its multiples (e.g. 60: on every minute), after the site's "
                          "readings stamped before it (default: 0, none; replay adds a "
                          "closing one anyway)")
    _add_faults(gen, "behind")

    rep = sub.add_parser("replay", help="publish a JSONL feed or a WebTRIS CSV to Kafka",
                         description="Publish a feed to Kafka, keyed as in the file, in file "
                                     "order: as fast as possible, at N x real time, or "
                                     "rebased so that it ends now.")
    rep.add_argument("file", type=Path, metavar="FILE",
                     help="a JSONL feed from `generate`, or a WebTRIS-style 15-minute CSV")
    rep.add_argument("--speed", type=_speed, default=None, metavar="max|N",
                     help="'max' sends as fast as possible; N paces event time at N x real "
                          "time (default: max)")
    rep.add_argument("--rebase-now", action="store_true",
                     help="shift every ts so that the data ends now (spacing kept)")
    rep.add_argument("--format", choices=("auto", "jsonl", "webtris"), default="auto",
                     help="input format; auto picks webtris for .csv files (default: auto)")
    beat = rep.add_argument_group("closing heartbeats")
    beat.add_argument("--no-heartbeats", action="store_true",
                      help="do not end each site's feed with a heartbeat (by default one "
                           "follows the site's last message, stamped at the end of its last "
                           "window - 15 min traffic, 1 h air - plus --lateness, so the "
                           "processor writes every window at once; never stamped ahead of "
                           "the wall clock)")
    beat.add_argument("--lateness", type=_seconds, default=None, metavar="SECONDS",
                      help="the processor's allowed lateness, added to the last window's "
                           "end (default: $ALLOWED_LATENESS_S, else 30)")
    csvg = rep.add_argument_group("WebTRIS CSV input")
    csvg.add_argument("--site-id", metavar="ID", help="site_id for every CSV row (default: "
                      "the 'Site Name' column up to its first ';')")
    csvg.add_argument("--csv-time", choices=("uk", "utc"), default="uk",
                      help="clock of the CSV's dates and times (default: uk, GMT/BST)")
    csvg.add_argument("--seed", type=int, default=0, metavar="N",
                      help="seed of the expansion into vehicles (default: 0)")
    csvg.add_argument("--frames", type=int, default=0, metavar="N",
                      help="send frames of up to N vehicles (default: one per message)")
    _add_kafka(rep)

    run = sub.add_parser("run", help="stream live, now-stamped readings until stopped",
                         description="Stream live readings stamped with the current time, "
                                     "paced to the wall clock, until Ctrl-C (or --duration).")
    run.add_argument("--duration", metavar="SPAN", help="stop after this long, e.g. 10m "
                     "(default: run until Ctrl-C)")
    _add_model(run, "random seed of the models (default: 0)")
    beats = run.add_argument_group("heartbeats")
    beats.add_argument("--heartbeat-s", type=_seconds, default=60.0, metavar="SECONDS",
                       help="send a heartbeat per site at every multiple of SECONDS of the "
                            "wall clock, stamped with it, after the site's readings stamped "
                            "before it (default: 60, on the minute; 0 turns them off)")
    beats.add_argument("--no-heartbeats", dest="heartbeat_s", action="store_const", const=0.0,
                       help="send no heartbeats (same as --heartbeat-s 0)")
    _add_faults(run, "ahead")
    _add_kafka(run)

    sites = sub.add_parser("sites", help="list the site catalogue (the shared registry)",
                           description="List the traffic detectors and air monitors of the "
                                       "registry shared with the processor.")
    sites.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sites.add_argument("--kind", choices=("all", "traffic", "air"), default="all",
                       help="which sites to list (default: all)")
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace, Registry], int]] = {
    "generate": commands.generate, "replay": commands.replay, "run": commands.run,
    "sites": commands.sites}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; return the exit status (2: bad arguments, 1: other errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args, load_registry())
    except UsageError as exc:
        parser.error(str(exc))
    except ThurrockError as exc:  # SimulatorError, or a bad setting in the environment
        print(f"sensors-sim: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `sensors-sim sites | head`
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
