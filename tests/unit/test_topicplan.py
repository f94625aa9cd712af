"""The production topic plan, and its comparison with a cluster (an in-memory admin here;
tests/integration/test_topics.py runs the command on the real broker)."""

from __future__ import annotations

from typing import Any

from thurrock_streams.settings import Settings
from thurrock_streams.topicplan import apply, compare, plan

HOUR_MS = 3600 * 1000
INTERNAL = (["p.app-traffic.readings-rekey", "p.app-air.readings-rekey"],
            ["app-air-sites-changelog", "app-alert-sites-changelog",
             "app-traffic-sites-changelog"], "app-__assignor-__leader")


def _plan(rf: int) -> dict[str, Any]:
    s = Settings.from_env({"TOPIC_PREFIX": "p.", "THURROCK_TOPIC_PARTITIONS": "6"})
    return {t.name: t for t in plan(s, rf, INTERNAL)}


def test_production_plan_at_replication_3() -> None:
    specs = _plan(3)
    # 24 h the dashboard reads back + a day's outage + a day's margin; dead letters and
    # alerts a month.
    stream = {"cleanup.policy": "delete", "retention.ms": str(72 * HOUR_MS),
              "min.insync.replicas": "2"}
    month = {**stream, "retention.ms": str(30 * 24 * HOUR_MS)}
    compact = {"cleanup.policy": "compact", "min.insync.replicas": "2"}
    want = {
        "p.traffic.readings": (6, stream), "p.air.readings": (6, stream),
        "p.app-traffic.readings-rekey": (6, stream), "p.app-air.readings-rekey": (6, stream),
        "p.traffic.aggregates": (6, stream), "p.air.aggregates": (6, stream),
        "p.alerts": (6, month), "p.readings.deadletter": (6, month),
        "app-air-sites-changelog": (6, compact), "app-alert-sites-changelog": (6, compact),
        "app-traffic-sites-changelog": (6, compact),
        "app-__assignor-__leader": (1, {"cleanup.policy": "delete",
                                        "retention.ms": str(24 * HOUR_MS),
                                        "min.insync.replicas": "2"}),
    }
    assert {n: (t.partitions, t.configs) for n, t in specs.items()} == want
    assert {t.replication_factor for t in specs.values()} == {3}


def test_one_broker_has_no_min_insync() -> None:
    assert all("min.insync.replicas" not in t.configs for t in _plan(1).values())


class MemoryAdmin:
    """Holds topics as (partitions, replication, configs); answers like kafka-python 3."""

    def __init__(self, topics: dict[str, tuple[int, int, dict[str, str]]]) -> None:
        self.topics = topics
        self.calls: list[str] = []

    def list_topics(self) -> list[str]:
        return list(self.topics)

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "partitions": [{"replica_nodes": list(range(self.topics[n][1]))}
                                           for _ in range(self.topics[n][0])]} for n in names]

    def describe_configs(self, resources: list[Any], config_filter: str) -> dict[str, Any]:
        return {"topic": {r.name: {k: {"value": v} for k, v in self.topics[r.name][2].items()}
                          for r in resources}}

    def create_topics(self, new: dict[str, dict[str, Any]], wait_for_metadata: bool) -> None:
        for n, o in new.items():
            self.topics[n] = (o["num_partitions"], o["replication_factor"], dict(o["configs"]))
            self.calls.append(f"create {n}")

    def alter_configs(self, resources: list[Any]) -> None:
        for r in resources:
            self.topics[r.name][2].update(r.configs)
            self.calls.append(f"alter {r.name} {sorted(r.configs)}")


def test_compare_and_apply() -> None:
    specs = list(_plan(3).values())
    admin = MemoryAdmin({
        "p.traffic.readings": (6, 3, {"cleanup.policy": "delete", "retention.ms": "1000",
                                      "min.insync.replicas": "2"}),
        "p.air.readings": (4, 1, {"cleanup.policy": "delete",
                                  "retention.ms": str(72 * HOUR_MS),
                                  "min.insync.replicas": "2"}),
    })
    found = compare(admin, specs)
    got = {(d.topic, d.what, d.key, d.planned, d.actual, d.fixable)
           for d in found.differences if d.what != "missing"}
    assert got == {
        ("p.traffic.readings", "config", "retention.ms", str(72 * HOUR_MS), "1000", True),
        ("p.air.readings", "partitions", "", "6", "4", False),
        ("p.air.readings", "replication", "", "3", "1", False),
    }
    assert sum(d.what == "missing" for d in found.differences) == len(specs) - 2
    done = apply(admin, specs, found)
    assert f"set p.traffic.readings retention.ms={72 * HOUR_MS}" in done
    assert "alter p.traffic.readings ['retention.ms']" in admin.calls
    assert not any("p.air.readings" in c for c in admin.calls), "partitions are never changed"
    after = compare(admin, specs)
    assert {(d.topic, d.what) for d in after.differences} == {
        ("p.air.readings", "partitions"), ("p.air.readings", "replication")}
    assert apply(admin, specs, after) == []
