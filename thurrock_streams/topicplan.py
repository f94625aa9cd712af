"""``thurrock-streams topics``: the production topic plan, shown, compared and applied.

Every topic the processor reads or writes, with its partitions, replication factor,
retention and compaction (docs/deploy.md says why each number):

- readings, re-key topics and aggregates: deleted after 3 days: the dashboard reads back
  24 hours at start, a worker or the store may be away for a day and resume from Kafka,
  and a day more of margin;
- alerts and dead letters: 30 days (open alerts can be older than a day; dead letters are
  looked at by engineers, not at once);
- table changelogs: compacted (the latest state of each site, kept for ever);
- Faust's leader-election topic: one partition.

The command compares the plan with the cluster and prints every difference. Without
``--apply`` it changes nothing (exit 1 if anything differs); with ``--apply`` it creates the
topics that are missing and sets the topic settings that differ. It never changes the
partition count of an existing topic (that would move sites to other partitions, away from
their state) nor its replication factor (that needs a reassignment): those it reports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SettingsError, ThurrockError
from .settings import Settings
from .topics import (
    AIR_AGGREGATES,
    AIR_READINGS,
    ALERTS,
    DEADLETTER,
    TRAFFIC_AGGREGATES,
    TRAFFIC_READINGS,
)

__all__ = ["Difference", "TopicSpec", "admin_config", "compare", "main", "plan"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: readings, re-keyed readings and aggregates (ms): 24 h the dashboard reads back, a day's
#: outage, a day of margin.
STREAM_RETENTION_MS = 3 * DAY_MS
#: alerts and dead letters (ms).
LONG_RETENTION_MS = 30 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    """One topic as planned."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    purpose: str

    def line(self) -> str:
        conf = ", ".join(f"{k}={v}" for k, v in sorted(self.configs.items()))
        return (f"{self.name}: {self.partitions} partitions, replication "
                f"{self.replication_factor}, {conf}  ({self.purpose})")


@dataclass(frozen=True)
class Difference:
    """How the cluster differs from one topic's plan."""

    topic: str
    what: str  # "missing", "partitions", "replication", "config"
    planned: str
    actual: str
    fixable: bool  # --apply can change it
    key: str = ""  # the config key, for "config"


@dataclass
class Outcome:
    """What ``compare`` found."""

    differences: list[Difference] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # what the broker would not say


def _configs(retention_ms: int | None, replication: int, *, compact: bool = False
             ) -> dict[str, str]:
    out = {"cleanup.policy": "compact" if compact else "delete"}
    if retention_ms is not None:
        out["retention.ms"] = str(retention_ms)
    if replication >= 3:
        # With acks=all (the worker's producers), a write survives the loss of one broker.
        out["min.insync.replicas"] = "2"
    return out


def internal_topics(settings: Settings) -> tuple[list[str], list[str], str]:
    """Names of the processor's re-key topics, table changelogs and leader topic, read
    from the app the worker builds with these settings."""
    from .app import build_app

    app, rt = build_app(settings)
    rekey = [rt.traffic.rekey_out.get_topic_name(), rt.air.rekey_out.get_topic_name()]
    changelogs = sorted(t.changelog_topic.get_topic_name() for t in app.tables.values())
    return rekey, changelogs, f"{app.conf.id}-__assignor-__leader"


def plan(settings: Settings, replication_factor: int,
         internal: tuple[Sequence[str], Sequence[str], str] | None = None) -> list[TopicSpec]:
    """The topic plan for these settings (CONTRACT.md §1 topics, prefix included)."""
    n, rf = settings.topic_partitions, replication_factor
    rekey, changelogs, leader = internal or internal_topics(settings)
    stream = _configs(STREAM_RETENTION_MS, rf)
    long = _configs(LONG_RETENTION_MS, rf)
    specs = [
        TopicSpec(settings.topic(TRAFFIC_READINGS), n, rf, stream, "sensor readings"),
        TopicSpec(settings.topic(AIR_READINGS), n, rf, stream, "sensor readings"),
        *(TopicSpec(t, n, rf, stream, "readings re-keyed by site") for t in rekey),
        TopicSpec(settings.topic(TRAFFIC_AGGREGATES), n, rf, stream, "aggregates"),
        TopicSpec(settings.topic(AIR_AGGREGATES), n, rf, stream, "aggregates"),
        TopicSpec(settings.topic(ALERTS), n, rf, long, "alert events"),
        TopicSpec(settings.topic(DEADLETTER), n, rf, long, "dead letters"),
        *(TopicSpec(t, n, rf, _configs(None, rf, compact=True), "table changelog")
          for t in changelogs),
        TopicSpec(leader, 1, rf, _configs(DAY_MS, rf), "Faust's leader election"),
    ]
    return specs


def admin_config(settings: Settings) -> dict[str, Any]:
    """kafka-python admin client options, with the project's one Kafka security builder."""
    from .adapters.kafka import kafka_python_options

    return {"bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
            "client_id": "thurrock-streams-topics", "request_timeout_ms": 15_000,
            **kafka_python_options(settings)}


def _describe(admin: Any, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(partitions, replication factor) of the topics that exist."""
    existing = set(admin.list_topics())
    wanted = [t for t in names if t in existing]
    out: dict[str, tuple[int, int]] = {}
    if not wanted:
        return out
    for t in admin.describe_topics(wanted):
        parts = t.get("partitions") or []
        # kafka-python 3 names the fields as the protocol does ("name", "replica_nodes").
        rf = min((len(p.get("replica_nodes", p.get("replicas")) or ()) for p in parts),
                 default=0)
        out[t.get("name", t.get("topic"))] = (len(parts), rf)
    return out


def _topic_configs(admin: Any, names: Sequence[str], keys: Iterable[str]
                   ) -> dict[str, dict[str, str]] | None:
    """The named settings of each topic, or None when the broker cannot describe them."""
    from kafka.admin import ConfigResource, ConfigResourceType

    # Every setting of each topic, filtered here: Tansu drops the connection when asked
    # for named keys.
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    try:
        res = admin.describe_configs(resources, config_filter="all")
    except Exception:
        return None
    topics: Any = (res.get("topic") or res.get("TOPIC") or {}) if isinstance(res, dict) else {}
    wanted = set(keys)
    out: dict[str, dict[str, str]] = {}
    for name, entries in topics.items():
        if not isinstance(entries, dict):
            return None
        out[name] = {k: str(v.get("value") if isinstance(v, dict) else v)
                     for k, v in entries.items() if k in wanted}
    return out


def compare(admin: Any, specs: Sequence[TopicSpec]) -> Outcome:
    """Every way the cluster differs from the plan."""
    found = _describe(admin, [s.name for s in specs])
    outcome = Outcome()
    existing = [s for s in specs if s.name in found]
    keys = sorted({k for s in specs for k in s.configs})
    described = _topic_configs(admin, [s.name for s in existing], keys) if existing else {}
    if described is None:
        outcome.unchecked.append("topic settings (the broker does not describe them)")
    configs = described or {}
    for s in specs:
        if s.name not in found:
            outcome.differences.append(Difference(s.name, "missing", s.line(), "-", True))
            continue
        parts, rf = found[s.name]
        if parts != s.partitions:
            outcome.differences.append(Difference(s.name, "partitions", str(s.partitions),
                                                  str(parts), False))
        if rf != s.replication_factor:
            outcome.differences.append(Difference(s.name, "replication",
                                                  str(s.replication_factor), str(rf), False))
        have = configs.get(s.name)
        if have is None:
            continue
        for k, v in sorted(s.configs.items()):
            if k not in have:
                outcome.unchecked.append(f"{s.name} {k}")
            elif have[k] != v:
                outcome.differences.append(Difference(s.name, "config", v, have[k], True, k))
    return outcome


def apply(admin: Any, specs: Sequence[TopicSpec], outcome: Outcome) -> list[str]:
    """Create the missing topics and set the settings that differ; return what was done."""
    from kafka.admin import ConfigResource, ConfigResourceType

    by_name = {s.name: s for s in specs}
    done = []
    missing = [d.topic for d in outcome.differences if d.what == "missing"]
    if missing:
        admin.create_topics({t: {"num_partitions": by_name[t].partitions,
                                 "replication_factor": by_name[t].replication_factor,
                                 "configs": by_name[t].configs} for t in missing},
                            wait_for_metadata=True)
        done += [f"created {t}" for t in missing]
    changes: dict[str, dict[str, str]] = {}
    for d in outcome.differences:
        if d.what == "config":
            changes.setdefault(d.topic, {})[d.key] = d.planned
    if changes:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, c)
                             for t, c in sorted(changes.items())])
        done += [f"set {t} {k}={v}" for t, c in sorted(changes.items()) for k, v in c.items()]
    return done


def main(argv: list[str] | None = None) -> int:
    """``thurrock-streams topics [--apply] [--replication-factor N]``."""
    parser = argparse.ArgumentParser(
        prog="thurrock-streams topics",
        description="Show the production topic plan (partitions, replication, retention, "
        "compaction of every topic the processor uses, TOPIC_PREFIX included) and how the "
        "cluster differs from it. Changes nothing unless --apply is given; then creates the "
        "missing topics and sets the topic settings that differ. Partition counts and "
        "replication factors of existing topics are reported, never changed. Exit status: 0 "
        "when the cluster matches the plan (after --apply), 1 when it does not, 2 on error.")
    parser.add_argument("--apply", action="store_true",
                        help="create missing topics and set differing settings")
    parser.add_argument("--replication-factor", type=int, default=None, metavar="N",
                        help="replicas per partition (default: THURROCK_TOPIC_REPLICATION_"
                        "FACTOR, 3 in production; 1 on a single-broker stack)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        rf = args.replication_factor or settings.topic_replication_factor
        if rf < 1:
            raise SettingsError(f"--replication-factor={rf} must be >= 1")
        from .adapters.kafka import describe

        config = admin_config(settings)  # unworkable security settings stop here
        specs = plan(settings, rf)
        print(f"Topic plan for {settings.kafka_bootstrap_servers} ({describe(settings)}):")
        for s in specs:
            print(f"  {s.line()}")
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**config)
    except ThurrockError as exc:
        print(f"thurrock-streams topics: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"thurrock-streams topics: cannot reach Kafka at "
              f"{settings.kafka_bootstrap_servers}: {exc!r}", file=sys.stderr)
        return 2
    try:
        outcome = compare(admin, specs)
        _report(outcome)
        if args.apply and any(d.fixable for d in outcome.differences):
            for line in apply(admin, specs, outcome):
                print(f"  {line}")
            outcome = compare(admin, specs)
            print("After applying:")
            _report(outcome)
        elif not args.apply and any(d.fixable for d in outcome.differences):
            print("Nothing changed: run with --apply to create and set what is planned.")
    except Exception as exc:
        print(f"thurrock-streams topics: {exc!r}", file=sys.stderr)
        return 2
    finally:
        admin.close()
    return 1 if outcome.differences else 0


def _report(outcome: Outcome) -> None:
    if not outcome.differences:
        print("The cluster matches the plan.")
    for d in outcome.differences:
        if d.what == "missing":
            print(f"  missing: {d.topic}")
        else:
            label = d.key if d.what == "config" else d.what
            note = "" if d.fixable else "  (not changed by --apply: see docs/deploy.md)"
            print(f"  differs: {d.topic} {label}: planned {d.planned}, actual {d.actual}{note}")
    for u in outcome.unchecked:
        print(f"  not checked: {u}")
