"""The baseline: a plain Faust app with one per-event agent that counts readings.

What a straightforward Faust implementation costs per event on this machine and broker:
``async for value in stream``, ``json.loads``, count the rows. Run by ``bench/run`` as
``python bench/baseline_app.py worker``; it writes the first and last event times to
``BENCH_RESULT`` once ``BENCH_EXPECT`` readings were counted.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import faust

APP_ID = os.environ["BENCH_APP_ID"]
app = faust.App(
    APP_ID,
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
    store="memory://",
    datadir=str(Path(tempfile.gettempdir()) / f"thurrock-bench-{APP_ID}"),
    consumer_auto_offset_reset="earliest",
    topic_partitions=4,
    broker_commit_interval=1.0,
    # The worker's group timeouts (app.py), so that joining the group takes seconds.
    broker_rebalance_timeout=3.0,
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
)
topic = app.topic(os.environ["BENCH_TOPIC"], key_serializer="raw", value_serializer="raw")
EXPECT = int(os.environ["BENCH_EXPECT"])
RESULT = Path(os.environ["BENCH_RESULT"])
seen: dict[str, Any] = {"n": 0, "first": None}


@app.agent(topic)
async def count(stream: Any) -> None:
    async for value in stream:
        if seen["first"] is None:
            seen["first"] = time.time()
        obj = json.loads(value)
        cols = obj.get("columns")
        seen["n"] += len(cols["ts"]) if cols else 1
        if seen["n"] >= EXPECT and not RESULT.exists():
            RESULT.write_text(json.dumps({"first": seen["first"], "last": time.time(),
                                          "readings": seen["n"]}))


if __name__ == "__main__":
    app.main()
