"""The simulator against the real processor: its expectations are what the processor does.

``sensors-sim generate`` writes a seeded feed and predicts, in its summary, the dead letters
the processor will write (CONTRACT.md §2–3); ``sensors-sim replay`` publishes it. Here both
run as the console script would, against the real broker and a real worker, and the
worker's counters (``/counters``) and the ``readings.deadletter`` topic must agree with the
summary exactly.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from thurrock_streams.stack import StackConfig

from .harness import consume_all, wait_for

pytestmark = pytest.mark.integration

#: Event-time tolerances of both the worker and the simulator's expectations (defaults).
TOLERANCES = {"ALLOWED_LATENESS_S": "30", "MAX_CLOCK_SKEW_S": "300"}
#: A weekday morning hour: real traffic, a feed of a few thousand readings.
START = "2024-06-03T07:00:00Z"


def sensors_sim(*args: str, cwd: Path) -> str:
    """Run the ``sensors-sim`` console script; return its stderr (the summary)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOPIC_PREFIX", "IDLE_FLUSH_S")}
    done = subprocess.run([sys.executable, "-m", "sensors_sim.cli", *args], cwd=cwd,
                          env={**env, **TOLERANCES}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


def generate(tmp: Path, name: str, sites: str, *faults: str, seed: int = 3,
             frames: int = 20) -> dict[str, Any]:
    """Write ``name``.jsonl with the CLI; return its summary file."""
    out = tmp / f"{name}.jsonl"
    sensors_sim("generate", "--seed", str(seed), "--start", START, "--duration", "1h",
                "--sites", sites, "--frames", str(frames), *faults, "--out", str(out), cwd=tmp)
    summary: dict[str, Any] = json.loads(out.with_name(out.name + ".summary.json").read_text())
    return summary


def replay(stack: StackConfig, prefix: str, tmp: Path, name: str, *options: str) -> str:
    """Publish ``name``.jsonl to this test's prefixed topics, as fast as possible, without
    the closing heartbeats (the counts below are about readings alone)."""
    return sensors_sim("replay", str(tmp / f"{name}.jsonl"), "--bootstrap", stack.bootstrap,
                       "--topic-prefix", prefix, "--speed", "max", "--no-heartbeats",
                       *options, cwd=tmp)


def totals(counters: dict[str, Any]) -> dict[str, Any]:
    """The air and traffic pipelines' counters added up."""
    pipes = [counters["pipelines"][k] for k in ("traffic", "air")]
    dead: Counter[str] = Counter()
    for p in pipes:
        dead.update(p["deadlettered"])
    return {"readings_in": sum(p["readings_in"] for p in pipes),
            "accepted": sum(p["accepted"] for p in pipes), "deadlettered": +dead}


def wait_readings(worker: Any, n: int, what: str, timeout: float = 150) -> dict[str, Any]:
    """The summed counters once ``n`` readings came in (fails with the last ones seen)."""
    last: list[dict[str, Any]] = []

    def seen() -> bool:
        last[:] = [totals(worker.counters())]
        return bool(last[0]["readings_in"] >= n)

    try:
        wait_for(seen, timeout, what, every=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; expected {n} readings, counters {last}; worker log:\n"
                             f"{worker.log()[-3000:]}") from None
    return last[0]


#: The feed each site belongs to in the test below.
FEED_OF = {"A13-": "clean", "AQ-GRAYS": "clean", "AQ-LAKESIDE": "clean", "A1089-": "behind",
           "AQ-TILBURY": "behind", "A126-": "ahead", "AQ-CORRINGHAM": "ahead",
           "A128-": "wrongkey", "AQ-PURFLEET": "wrongkey"}


def dead_letters(stack: StackConfig, prefix: str, n: int) -> list[dict[str, Any]]:
    """The dead letters, each with the ``feed`` its site belongs to.

    The site is the ``site_id`` in the original bytes, or the message key when those
    cannot be read (an undecodable message keeps its key).
    """
    out = []
    for rec in consume_all(stack, f"{prefix}readings.deadletter", expect=n, timeout=60):
        d = json.loads(rec.value)
        try:
            site = json.loads(base64.b64decode(d["value_b64"]))["site_id"]
        except (ValueError, KeyError, TypeError):
            site = rec.key.decode()
        d["feed"] = next(f for p, f in FEED_OF.items() if site.startswith(p))
        out.append(d)
    return out


def expected(summary: dict[str, Any]) -> Counter[str]:
    return +Counter(summary["expected_deadletter"])


def test_replayed_feeds_give_exactly_the_simulators_expected_counts(
        stack: StackConfig, prefix: str, make_worker: Any, tmp_path: Path) -> None:
    # IDLE_FLUSH_S well beyond the test: the simulator's expectations assume that no site is
    # idle-flushed mid-feed (docs/simulator.md, caveats).
    worker = make_worker(IDLE_FLUSH_S="600", **TOLERANCES)

    # 1. No fault options: nothing is dead-lettered, every reading is accepted.
    clean = generate(tmp_path, "clean", "A13-STIFFORD-*,AQ-GRAYS-*,AQ-LAKESIDE")
    assert clean["faults"] == dict.fromkeys(clean["faults"], 0)
    assert expected(clean) == Counter()
    assert clean["expected_accepted"] == clean["readings"] > 1000
    replay(stack, prefix, tmp_path, "clean")
    got = wait_readings(worker, clean["readings"], "the clean feed's readings")
    assert got == {"readings_in": clean["readings"], "accepted": clean["readings"],
                   "deadlettered": Counter()}
    assert consume_all(stack, f"{prefix}readings.deadletter", expect=1, timeout=3) == []

    # 2. Fault options, on other sites (their watermarks start afresh): every dead-letter
    # reason the simulator predicts, in frames and single readings, plus faults that must
    # not be dead-lettered at all (dropout, stuck values, duplicates, out-of-order delivery
    # within the allowed lateness). Skewed clocks run behind here (late).
    faults = ("--fault-spike", "0.01", "--fault-skew", "0.006", "--fault-malformed", "0.1",
              "--fault-duplicate", "0.01", "--fault-out-of-order", "0.03",
              "--fault-dropout", "0.2", "--fault-stuck", "0.2")
    behind = generate(tmp_path, "behind", "A1089-*,AQ-TILBURY-*", *faults, seed=7)
    # 3. Clocks skewed ahead, rebased so that the data ends now: the skewed readings are
    # 10 min-2 h ahead of the worker's clock (future), with spikes and malformed messages;
    # single readings this time.
    ahead = generate(tmp_path, "ahead", "A126-*,AQ-CORRINGHAM-*", "--fault-skew", "0.01",
                     "--skew-direction", "ahead", "--fault-spike", "0.005",
                     "--fault-malformed", "0.01", seed=6, frames=0)
    for s in (behind, ahead):
        assert all(s["faults"][k] > 0 for k in s["fault_rates"]
                   if k != "skew_direction" and s["fault_rates"][k] > 0), s["faults"]
    assert set(expected(behind)) == {"decode", "schema", "range", "late"}
    assert set(expected(ahead)) == {"decode", "schema", "range", "future"}
    # A duplicate is a second, identical reading: both copies are counted (CONTRACT.md §2,
    # accounting invariant), neither is dead-lettered; the simulator counts it twice too.
    assert behind["faults"]["duplicate"] > 0
    replay(stack, prefix, tmp_path, "behind")
    replay(stack, prefix, tmp_path, "ahead", "--rebase-now")

    readings = clean["readings"] + behind["readings"] + ahead["readings"]
    want = expected(behind) + expected(ahead)
    got = wait_readings(worker, readings, "every reading of the faulty feeds")
    assert got == {"readings_in": readings, "accepted": readings - sum(want.values()),
                   "deadlettered": want}
    dead = dead_letters(stack, prefix, sum(want.values()))
    assert Counter(d["reason"] for d in dead) == want
    # each feed's share, told apart by site (in the original bytes, else the message key)
    for name, summary in (("behind", behind), ("ahead", ahead)):
        assert Counter(d["reason"] for d in dead if d["feed"] == name) == expected(summary)
    # the frame row of a bad reading is named; an undecodable message has no row
    assert any(d["row"] is not None for d in dead if d["reason"] in ("range", "schema"))
    assert all(d["row"] is None for d in dead if d["reason"] == "decode")

    # 4. Wrong or missing Kafka keys, on other sites again. The processor re-keys such a
    # message by the site_id in its value to the site's partition (CONTRACT.md §1), which
    # gives up its order against the site's other messages: replayed at --speed max it is
    # usually applied after whatever of that site was waiting there, which has moved the
    # site's watermark past the allowed lateness, so its readings are `late` (and, more
    # rarely, it overtakes them and they are late instead). docs/simulator.md names this
    # caveat; the summary cannot predict the count (it depends on the consumer's lag) and
    # expects none. What holds exactly, and is checked: every reading is accounted for
    # (CONTRACT.md §2), and nothing of this feed is dead-lettered for any other reason.
    wrong = generate(tmp_path, "wrongkey", "A128-*,AQ-PURFLEET-*", "--fault-wrong-key", "0.1",
                     seed=8)
    assert wrong["faults"]["wrong_key"] > 0 and expected(wrong) == Counter()
    keys = [orjson.loads(line) for line in (tmp_path / "wrongkey.jsonl").read_bytes().splitlines()]
    assert sum(o["key"] != o["value"]["site_id"] for o in keys) == wrong["faults"]["wrong_key"]
    replay(stack, prefix, tmp_path, "wrongkey")
    readings += wrong["readings"]
    got = wait_readings(worker, readings, "every reading of the wrong-keyed feed")
    late = got["deadlettered"]["late"] - want["late"]
    assert got["deadlettered"] == want + Counter(late=late)
    assert got["readings_in"] == got["accepted"] + sum(got["deadlettered"].values())
    assert 0 <= late < wrong["readings"]
    dead = dead_letters(stack, prefix, sum(want.values()) + late)
    assert Counter(d["reason"] for d in dead if d["feed"] == "wrongkey") == +Counter(late=late)

    # 5. /metrics tells the same as /counters, and no source message was lost between
    # Kafka and the agents (docs/operations.md, batch lanes).
    c, m = worker.counters(), worker.metrics()
    for kind in ("traffic", "air"):
        p = c["pipelines"][kind]
        assert m[f'thurrock_readings_in_total{{pipeline="{kind}"}}'] == p["readings_in"] > 0
        for reason, n in p["deadlettered"].items():
            assert m[f'thurrock_deadlettered_total{{pipeline="{kind}",reason="{reason}"}}'] == n
    lanes = c["lanes"]
    assert set(lanes) == {"traffic", "air", "alerts", "alert-notify", "sink"}
    for lane, counts in lanes.items():
        assert counts["missed"] == 0
        for name, n in counts.items():
            assert m[f'thurrock_lane_{name}_total{{lane="{lane}"}}'] == n
    assert m["thurrock_sink_written_points_total"] == c["sink"]["written_points"] > 0


def test_heartbeats_share_the_sites_topic_key_and_partition(
        stack: StackConfig, prefix: str, tmp_path: Path) -> None:
    """Through the real broker, on topics of 4 partitions: a site's heartbeats (every
    minute, written by ``generate``, and the closing one ``replay`` adds) are on its
    readings' topic with its site_id as key, so in its readings' partition, and there
    each comes after every reading of the site stamped before it. No worker is needed."""
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        admin.create_topics([NewTopic(f"{prefix}{t}", 4, 1)
                             for t in ("traffic.readings", "air.readings")])
    finally:
        admin.close()
    out = tmp_path / "beats.jsonl"
    sensors_sim("generate", "--seed", "2", "--start", START, "--duration", "20m", "--sites",
                "A13-STIFFORD-*,A128-*,AQ-GRAYS-*", "--frames", "10", "--heartbeat-s", "60",
                "--out", str(out), cwd=tmp_path)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["heartbeats"] == 5 * 20
    report = sensors_sim("replay", str(out), "--bootstrap", stack.bootstrap, "--topic-prefix",
                         prefix, "--speed", "max", cwd=tmp_path)
    assert "100 from the file, 5 closing (last window end + 30 s)" in report
    in_file = Counter(orjson.loads(line)["topic"] for line in out.read_bytes().splitlines())
    want = {"traffic.readings": in_file["traffic.readings"] + 4,
            "air.readings": in_file["air.readings"] + 1}
    records = {t: consume_all(stack, f"{prefix}{t}", expect=n, timeout=60)
               for t, n in want.items()}
    assert {t: len(v) for t, v in records.items()} == want
    closing = {"traffic.readings": 1717399800.0 + 30.0,  # 07:19:xx -> the quarter to 07:30
               "air.readings": 1717401600.0 + 30.0}  # 07:19 -> the hour to 08:00
    assert len({r.partition for r in records["traffic.readings"]}) > 1  # sites spread out
    for topic, recs in records.items():
        by_site: dict[str, list[Any]] = {}
        for r in recs:
            value = json.loads(r.value)
            assert r.key.decode() == value["site_id"]
            by_site.setdefault(value["site_id"], []).append((r.partition, r.offset, value))
        for site, items in by_site.items():
            assert len({p for p, _, _ in items}) == 1, site  # one partition per site
            items.sort(key=lambda x: x[1])
            values = [v for _, _, v in items]
            beats = [i for i, v in enumerate(values) if v.get("heartbeat") is True]
            assert [values[i]["ts"] for i in beats] == [
                1717398000.0 + 60.0 * k for k in range(1, 21)] + [closing[topic]]
            assert beats[-1] == len(values) - 1  # the closing one ends the site's feed
            for i in beats:
                hb = values[i]["ts"]
                for j, v in enumerate(values):
                    for t in v["columns"]["ts"] if "columns" in v else []:
                        assert (j < i) if t < hb else (j > i), (site, hb, t)
