"""``thurrock-streams topics`` on the real broker: a plan first, then created, idempotent,
differences found and put right, partition counts never changed; the worker then runs on
exactly the planned topics.

Tansu reports back the topic settings given at creation (and ones set since) but not a
full broker's defaults: ``min.insync.replicas`` (planned only at replication >= 3) would
show as "not checked" there; at replication 1 it is not planned.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from thurrock_streams.stack import StackConfig

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000


def _run(stack: StackConfig, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env(), "TOPIC_PREFIX": prefix, "THURROCK_APP_ID": "app"}
    return subprocess.run([sys.executable, "-m", "thurrock_streams", "topics", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def _expected(prefix: str) -> dict[str, tuple[int, dict[str, str]]]:
    """The plan, written out independently: partitions and settings per topic."""
    stream = {"cleanup.policy": "delete", "retention.ms": str(3 * DAY_MS)}
    long = {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}
    app = f"{prefix}app"  # the group and stem of internal topics: TOPIC_PREFIX + app id
    return {
        f"{prefix}traffic.readings": (4, stream), f"{prefix}air.readings": (4, stream),
        f"{app}-traffic.readings-rekey": (4, stream),
        f"{app}-air.readings-rekey": (4, stream),
        f"{prefix}traffic.aggregates": (4, stream), f"{prefix}air.aggregates": (4, stream),
        f"{prefix}alerts": (4, long), f"{prefix}readings.deadletter": (4, long),
        f"{app}-traffic-sites-changelog": (4, {"cleanup.policy": "compact"}),
        f"{app}-air-sites-changelog": (4, {"cleanup.policy": "compact"}),
        f"{app}-alert-sites-changelog": (4, {"cleanup.policy": "compact"}),
        f"{app}-__assignor-__leader": (1, {"cleanup.policy": "delete",
                                           "retention.ms": str(DAY_MS)}),
    }


def _ours(admin: KafkaAdminClient, prefix: str) -> set[str]:
    return {t for t in admin.list_topics() if t.startswith(prefix)}


def _state(admin: KafkaAdminClient, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    parts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    res: Any = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n)
                                       for n in names], config_filter="all")
    configs = {n: {k: v["value"] for k, v in c.items()} for n, c in res["topic"].items()}
    return {n: (parts[n], configs[n]) for n in names}


def test_topics_plan_apply_idempotent(stack: StackConfig, prefix: str, make_worker: Any) -> None:
    expected = _expected(prefix)
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        # A readings topic someone made by hand with too few partitions.
        odd = f"{prefix}air.readings"
        admin.create_topics({odd: {"num_partitions": 2, "replication_factor": 1}},
                            wait_for_metadata=True)

        dry = _run(stack, prefix)
        assert dry.returncode == 1, dry.stderr
        planned = [ln.strip().split(":")[0] for ln in dry.stdout.splitlines()
                   if "partitions, replication 1" in ln]
        assert sorted(planned) == sorted(expected)
        missing = {ln.split("missing: ")[1] for ln in dry.stdout.splitlines() if "missing: " in ln}
        assert missing == set(expected) - {odd}
        assert f"differs: {odd} partitions: planned 4, actual 2" in dry.stdout
        assert _ours(admin, prefix) == {odd}, "a dry run changes nothing"

        applied = _run(stack, prefix, "--apply")
        assert applied.returncode == 1, "the partition count is left for a person to decide"
        assert applied.stdout.count("  created ") == len(expected) - 1
        assert f"differs: {odd} partitions: planned 4, actual 2  (not changed" in applied.stdout
        state = _state(admin, sorted(expected))
        for name, (n, configs) in expected.items():
            got_n, got_configs = state[name]
            assert got_n == (2 if name == odd else n), name
            if name != odd:
                assert {k: got_configs.get(k) for k in configs} == configs, name

        # Put the odd topic right by hand (delete and re-create through the plan).
        admin.delete_topics([odd])
        assert _run(stack, prefix, "--apply").returncode == 0
        again = _run(stack, prefix)
        assert again.returncode == 0, again.stdout
        assert "The cluster matches the plan." in again.stdout
        assert "created" not in again.stdout

        # A setting changed behind the plan's back is reported, then set back.
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, f"{prefix}alerts",
                                            {"retention.ms": "60000"})])
        drift = _run(stack, prefix)
        assert drift.returncode == 1
        assert (f"differs: {prefix}alerts retention.ms: planned {30 * DAY_MS}, actual 60000"
                in drift.stdout)
        fixed = _run(stack, prefix, "--apply")
        assert fixed.returncode == 0, fixed.stdout
        assert f"set {prefix}alerts retention.ms={30 * DAY_MS}" in fixed.stdout
        assert _state(admin, [f"{prefix}alerts"])[f"{prefix}alerts"][1]["retention.ms"] == \
            str(30 * DAY_MS)

        # The worker runs on the planned topics and needs no other.
        make_worker()
        created_by_worker = (_ours(admin, prefix) | {t for t in admin.list_topics()
                                                     if t.startswith(f"{prefix}app-")}) \
            - set(expected)
        assert created_by_worker == set()
    finally:
        admin.close()
