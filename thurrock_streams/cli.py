"""The ``thurrock-streams`` command: Faust's own CLI bound to the app, plus ``stack``,
``dashboard``, ``watch``, ``rules`` and ``topics``.

``thurrock-streams worker --web-port 6066 --loglevel info`` runs the processor and
takes every Faust worker option; ``thurrock-streams stack up|down|status`` manages the
local stack of real servers (Tansu and VictoriaMetrics); ``thurrock-streams topics
[--apply]`` shows (and applies) the production topic plan; ``thurrock-streams dashboard``
serves the operators' web page.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from .errors import StackError, ThurrockError
from .settings import Settings
from .topics import AIR_READINGS, TRAFFIC_READINGS

__all__ = ["main"]

log = logging.getLogger(__name__)


def _stack(argv: list[str]) -> int:
    from . import stack

    parser = argparse.ArgumentParser(
        prog="thurrock-streams stack",
        description="Start, stop or inspect the local stack: a Tansu Kafka-protocol broker "
        "and a VictoriaMetrics store taking InfluxDB writes. Files live in "
        "THURROCK_STACK_DIR (default ./.stack); ports come from THURROCK_KAFKA_PORT "
        "(default 9092) and THURROCK_STORE_PORT (default 8428).")
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    cfg = stack.StackConfig.from_env()
    try:
        if args.action == "up":
            for line in stack.up(cfg):
                print(line)
        elif args.action == "down":
            for line in stack.down(cfg):
                print(line)
        elif args.action == "env":
            for k, v in cfg.env().items():
                print(f"export {k}={v}")
        else:
            bad = 0
            for name, pid, healthy in stack.status(cfg):
                state = "healthy" if healthy else "NOT answering"
                print(f"{name}: {state}" + (f" (pid {pid})" if pid else ""))
                bad += not healthy
            return 1 if bad else 0
    except StackError as exc:
        print(f"thurrock-streams stack {args.action}: {exc}", file=sys.stderr)
        return 2
    return 0


def _existing_partitions(settings: Settings) -> int | None:
    """Partition count of readings topics that already exist (they must agree)."""
    try:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
                                 request_timeout_ms=5000,
                                 **_kafka_python_security(settings))
    except Exception as exc:
        log.debug("partition pre-check skipped: %r", exc)
        return None
    try:
        topics = consumer.topics()
        counts = {}
        for t in (TRAFFIC_READINGS, AIR_READINGS):
            name = settings.topic(t)
            if name in topics:
                counts[name] = len(consumer.partitions_for_topic(name) or ())
    finally:
        consumer.close()
    if len(set(counts.values())) > 1:
        raise ThurrockError(f"readings topics have different partition counts {counts}: "
                            "give them the same count")
    return next(iter(counts.values()), None)


def _kafka_python_security(s: Settings) -> dict[str, object]:
    from .adapters.kafka import kafka_python_options

    return kafka_python_options(s)


def check_tls(settings: Settings) -> None:
    """Raise SettingsError for Kafka or InfluxDB security settings that cannot work."""
    from .adapters.influx import tls_options
    from .adapters.kafka import ssl_context

    ssl_context(settings)
    tls_options(settings)


def _rules(args: list[str]) -> int:
    """``thurrock-streams rules [FILE]``: validate an alert rules file and show it."""
    import dataclasses
    import json

    from .alerts.rules import load_rules

    if args[:1] in (["-h"], ["--help"]) or len(args) > 1:
        print("usage: thurrock-streams rules [FILE]\n\nValidate an alert rules file (default: "
              "ALERT_RULES_FILE, else the packaged defaults) and print the rules in force.")
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    path = args[0] if args else os.environ.get("ALERT_RULES_FILE") or None
    try:
        rules = load_rules(path)
    except ThurrockError as exc:
        print(f"thurrock-streams: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(rules), indent=2))
    return 0


USAGE = """usage: thurrock-streams COMMAND [OPTIONS]

Real-time traffic and air-quality processing for Thurrock: aggregates per site, the UK
Daily Air Quality Index, alerts, written to Kafka and InfluxDB.

commands:
  worker      run the processor (a Faust worker; `worker --help` lists its options)
  dashboard   serve the operators' web dashboard: live map, site panels, alerts
  stack       start, stop or check the local stack (Kafka-protocol broker and store)
  watch       live terminal view of the aggregates, alerts and the worker's counters
  rules       check an alert rules file and print the rules in force
  topics      show the production topic plan (`topics --apply` creates what is missing)

Settings come from the environment (KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX, INFLUX_URL, ...;
see README.md and docs/operations.md). `thurrock-streams COMMAND --help` says more.
"""


def _dashboard(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="thurrock-streams dashboard",
        description="Serve the operators' dashboard (a live map of Thurrock, a panel per "
        "site, the alerts) from the aggregates and alerts topics. Settings: as the worker's "
        "(KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX, Kafka security), plus DASHBOARD_HOST "
        "(default 127.0.0.1), DASHBOARD_PORT (default 8080), DASHBOARD_STALE_TRAFFIC_S "
        "(180), DASHBOARD_STALE_AIR_S (1200) and DASHBOARD_FEED (SIMULATED, REPLAY or "
        "empty); see docs/dashboard.md.")
    parser.parse_args(args)
    from .dashboard.config import DashboardConfig
    from .dashboard.web import run

    try:
        settings = Settings.from_env()
        config = DashboardConfig.from_env()
        from .alerts.rules import load_rules

        load_rules(settings.alert_rules_file or None)
        check_tls(settings)
    except ThurrockError as exc:
        print(f"thurrock-streams dashboard: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # aiokafka logs every failed reconnect attempt; the feed logs one line per outage.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        run(settings, config)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        print(f"thurrock-streams dashboard: cannot listen on {config.host}:{config.port}: "
              f"{exc.strerror or exc} (DASHBOARD_HOST, DASHBOARD_PORT)", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of the ``thurrock-streams`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in ([], ["-h"], ["--help"], ["help"]):
        print(USAGE, end="")
        return 0 if args else 2
    if args[:1] == ["dashboard"]:
        return _dashboard(args[1:])
    if args[:1] == ["stack"]:
        return _stack(args[1:])
    if args[:1] == ["watch"]:
        from .watch import main as watch

        return watch(args[1:])
    if args[:1] == ["rules"]:
        return _rules(args[1:])
    if args[:1] == ["topics"]:
        from .topicplan import main as topics

        return topics(args[1:])
    try:
        settings = Settings.from_env()
        from .alerts.rules import load_rules

        load_rules(settings.alert_rules_file or None)  # a bad rules file stops here, clearly
        check_tls(settings)  # so do a bad CA file and missing SASL credentials
        if args[:1] == ["worker"]:
            existing = _existing_partitions(settings)
            if existing and existing != settings.topic_partitions:
                os.environ["THURROCK_TOPIC_PARTITIONS"] = str(existing)
    except ThurrockError as exc:
        print(f"thurrock-streams: {exc}", file=sys.stderr)
        return 2
    from .app import app

    tune_gc()
    app.main()
    return None


#: Allocations (less deallocations) between two collections of the youngest generation
#: in the worker (Python: 700).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Make Python's cyclic garbage collector cheaper for the worker.

    A step allocates tens of thousands of short-lived objects that reference counting
    frees (rows, records, states replaced); at Python's default the collector ran every
    700 of them and traversed the young ones each time: ≈ 15 % of an in-process step of
    single readings (docs/performance.md). What the app built at start-up (modules,
    settings, the app itself) is moved out of the collector's sight (``gc.freeze``).
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


if __name__ == "__main__":
    sys.exit(main())
