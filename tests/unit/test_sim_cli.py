"""The console script and the live runner (fake clock, no broker, no sleeping)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensors_sim import FaultRates, FeedOptions
from sensors_sim.cli import main
from sensors_sim.live import LiveRunner
from sensors_sim.progress import Progress
from tests.unit.test_sim_contract import check_row, verdicts
from thurrock_streams.registry import load_registry

START = 1_717_372_800.0


def test_generate_writes_file_summary_and_report(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "day.jsonl"
    args = ["generate", "--seed", "5", "--start", "2024-06-03T07:00:00Z", "--duration", "20m",
            "--sites", "A126-*,AQ-GRAYS-*", "--frames", "4", "--fault-malformed", "0.1",
            "--out", str(out)]
    assert main(args) == 0
    first = out.read_bytes()
    report = capsys.readouterr()
    assert report.out == ""  # machine output goes to the file, the report to stderr
    for word in ("messages", "readings", "faults injected", "expected dead letters", "rate"):
        assert word in report.err
    doc = json.loads((tmp_path / "day.jsonl.summary.json").read_text())
    assert doc["messages"] == len(first.splitlines())
    assert doc["faults"]["malformed"] > 0
    assert main(args) == 0
    assert out.read_bytes() == first


@pytest.mark.parametrize("command", ["generate", "replay", "run", "sites"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: sensors-sim " + command in text
    if command != "sites":
        assert "default" in text
    if command in ("generate", "run"):
        assert "--fault-spike RATE" in text and "seconds" in text
    if command == "replay":
        assert "--rebase-now" in text and "--speed max|N" in text and "WebTRIS" in text


@pytest.mark.parametrize("args", [
    ["generate", "--out", "x.jsonl", "--fault-spike", "2"],
    ["generate", "--out", "x.jsonl", "--duration", "ten"],
    ["generate", "--out", "x.jsonl", "--start", "yesterday"],
    ["generate", "--out", "x.jsonl", "--sites", "NOWHERE-*"],
    ["replay", "x.jsonl", "--speed", "fast"],
])
def test_bad_arguments_exit_2(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    assert "error" in capsys.readouterr().err


def test_sites_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sites", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    reg = load_registry()
    assert len(doc["sites"]) == len(reg.traffic) + len(reg.air)
    assert main(["sites", "--kind", "air"]) == 0
    text = capsys.readouterr().out
    assert "AQ-TILBURY-CALCUTTA-RD" in text and "A13-STIFFORD-EB" not in text


def test_replay_to_a_file_and_a_missing_input(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "f.jsonl"
    assert main(["generate", "--duration", "5m", "--sites", "A128-*", "--out", str(feed)]) == 0
    copy = tmp_path / "copy.jsonl"
    assert main(["replay", str(feed), "--out", str(copy), "--no-heartbeats"]) == 0
    assert copy.read_bytes() == feed.read_bytes()
    assert "replayed" in capsys.readouterr().err
    # by default each site's feed ends with a heartbeat: 00:05 -> 00:15 + 30 s
    assert main(["replay", str(feed), "--out", str(copy), "--lateness", "30"]) == 0
    beats = [b'{"topic":"traffic.readings","key":"%s","value":{"site_id":"%s",'
             b'"ts":1717373730.0,"heartbeat":true}}\n' % (s, s)
             for s in (b"A128-ORSETT-NB", b"A128-ORSETT-SB")]
    assert copy.read_bytes() == feed.read_bytes() + b"".join(beats)
    assert main(["replay", str(tmp_path / "nope.jsonl"), "--out", str(copy)]) == 1
    assert "error" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal() -> None:
    buf = io.StringIO()
    ticks = iter(range(100))
    bar = Progress("writing", 10, stream=buf, enabled=True, clock=lambda: float(next(ticks)))
    bar(5)
    bar.close()
    assert "\r" in buf.getvalue() and "50.0%" in buf.getvalue()
    quiet = io.StringIO()
    Progress("writing", 10, stream=quiet)(5)  # a StringIO is not a TTY
    assert quiet.getvalue() == ""


class ClockedSink:
    """Records each message with the (fake) wall-clock time it was sent at."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.lines: list[dict[str, Any]] = []
        self.times: list[float] = []

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        try:
            line: dict[str, Any] = {"topic": topic, "key": key, "value": orjson.loads(value)}
        except orjson.JSONDecodeError:
            import base64
            line = {"topic": topic, "key": key, "value_b64": base64.b64encode(value).decode()}
        self.lines.append(line)
        self.times.append(self.clock.t)

    def close(self) -> None:
        pass


class FakeClock:
    """Wall-clock time that moves only when the runner sleeps."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert 0 < s <= 0.5
        self.t += s


def _runner(t0: float, frames: int, faults: FaultRates, stop_after: int | None = None
            ) -> tuple[LiveRunner, ClockedSink, FakeClock]:
    clock = FakeClock(t0)
    sink = ClockedSink(clock)
    opts = FeedOptions(start=t0, duration_s=1.0, seed=3, frames=frames, faults=faults,
                       sites=("A13-STIFFORD-*", "A1089-*", "AQ-TILBURY-*"))
    runner = LiveRunner(load_registry(), opts, sink, clock=clock.now, sleep=clock.sleep,
                        stop=(lambda: len(sink.lines) >= stop_after) if stop_after else
                        (lambda: False))
    return runner, sink, clock


@pytest.mark.parametrize("frames", [0, 6])
def test_live_readings_are_now_stamped_and_accounted(frames: int) -> None:
    t0 = START + 8 * 3600 + 250.0  # crosses a 5-minute block boundary
    faults = FaultRates(skew=0.02, skew_direction="ahead", malformed=0.02, out_of_order=0.02,
                        duplicate=0.02)
    runner, sink, clock = _runner(t0, frames, faults)
    summary = runner.run(duration_s=120.0)
    assert clock.t >= t0 + 119.0
    assert summary.messages == len(sink.lines)
    assert summary.readings > 200
    for line, sent in zip(sink.lines, sink.times, strict=True):
        value = line.get("value")
        if not isinstance(value, dict) or check_row(line["topic"], {
                **value, **({k: v[-1] for k, v in value["columns"].items()}
                            if "columns" in value else {})}):
            continue
        ts = value["columns"]["ts"][-1] if "columns" in value else value["ts"]
        if ts <= sent + 300:
            assert sent - 40 <= ts <= sent  # sent when due: out-of-order adds up to 28 s
    records, reasons = verdicts(sink.lines, sink.times)
    assert records == summary.readings
    assert {k: v for k, v in summary.expected_deadletter.items() if v} == dict(reasons)
    assert reasons["future"] == summary.faults["skew"] > 0
    assert reasons["late"] == 0


def test_live_stop_mid_block_counts_only_what_was_sent() -> None:
    faults = FaultRates(spike=0.05, malformed=0.05)
    runner, sink, _ = _runner(START + 9 * 3600, 0, faults, stop_after=150)
    summary = runner.run()
    assert summary.messages == len(sink.lines) == 150
    records, reasons = verdicts(sink.lines, START + 10 * 3600)
    assert records == summary.readings
    assert {k: v for k, v in summary.expected_deadletter.items() if v} == dict(reasons)
    assert summary.faults["spike"] >= reasons["range"]
