"""The local stack is real: Tansu speaks Kafka, VictoriaMetrics takes InfluxDB writes."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from thurrock_streams import stack as stack_mod
from thurrock_streams.errors import StackError
from thurrock_streams.stack import StackConfig

from .harness import consume_all, export, send, wait_for

pytestmark = pytest.mark.integration


def test_produce_and_consume_through_the_broker(stack: StackConfig) -> None:
    topic = f"probe-{uuid.uuid4().hex[:8]}"
    sent = [(f"k{i}".encode(), {"i": i}) for i in range(20)]
    send(stack, topic, sent)
    got = consume_all(stack, topic, expect=20)
    assert sorted(r.value for r in got) == sorted(f'{{"i": {i}}}'.encode() for i in range(20))


def test_store_round_trips_points_written_with_influxdb_client(stack: StackConfig) -> None:
    site = f'probe {uuid.uuid4().hex[:6]}, "x"=1 \'q'
    with InfluxDBClient(url=stack.store_url, token="unused", org="thurrock") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket="thurrock", write_precision=WritePrecision.S, record=[
            Point("probe").tag("site_id", site).field("count", 7).field("speed", 88.25)
            .time(1_700_000_060, WritePrecision.S)])
    rows = wait_for(lambda: export(stack, '{__name__=~"probe_.*"}'), 30, "the probe points")
    mine = {r["metric"]["__name__"]: r for r in rows if r["metric"]["site_id"] == site}
    assert mine["probe_count"]["values"] == [7]
    assert mine["probe_speed"]["values"] == [88.25]
    assert mine["probe_count"]["timestamps"] == [1_700_000_060_000]


def test_stack_status_reports_both_servers_healthy(stack: StackConfig) -> None:
    assert [(name, healthy) for name, _, healthy in stack_mod.status(stack)] == [
        ("kafka", True), ("store", True)]


def test_an_occupied_port_gives_a_one_line_error_naming_the_fix(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = StackConfig(root=tmp_path, kafka_port=port, store_port=port + 1)
        with pytest.raises(StackError) as err:
            stack_mod.up(cfg, timeout_s=5)
        assert f"port {port}" in str(err.value) and "THURROCK_KAFKA_PORT" in str(err.value)
        env = {"THURROCK_STACK_DIR": str(tmp_path), "THURROCK_KAFKA_PORT": str(port),
               "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-m", "thurrock_streams", "stack", "up"],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "THURROCK_KAFKA_PORT=<port>" in done.stderr
