"""The ceiling: a bare aiokafka consumer, the most any worker could do on this machine.

Run by ``bench/run`` in a subprocess, once per feed, on the topic the worker then
consumes. It is assigned every partition of ``--topic`` (no consumer group, nothing
committed), reads from the start with ``getmany`` and calls ``orjson.loads`` on every
message value, nothing else, until it has seen ``--messages`` messages. Readings/s is
the feed's readings over the time from the first ``getmany`` call to the last message
decoded. Prints one JSON object: messages, seconds, CPU seconds, peak RSS (MB).

A worker has to do at least this (fetch and parse every message) and much more (validate,
window, aggregate, produce, commit), so its readings/s divided by this one's says how much
of the machine's reachable rate it gets.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` can carry the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


async def consume(bootstrap: str, topic: str, partitions: int, expect: int,
                  timeout_s: float) -> dict[str, Any]:
    # aiokafka's defaults otherwise (1 MB per partition and fetch: 30-40 frames of 1,000
    # readings; 8 MB measured no faster here, within this machine's noise)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = orjson.loads
        seen = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        deadline = t0 + timeout_s
        while seen < expect and time.perf_counter() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    loads(record.value)
                seen += len(records)
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return {"messages": seen, "seconds": t1 - t0, "cpu_s": cpu1 - cpu0,
            "rss_mb": peak_rss_mb(),
            "complete": seen >= expect}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--messages", type=int, required=True, help="stop after this many")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds at most")
    a = p.parse_args()
    res = asyncio.run(consume(a.bootstrap, a.topic, a.partitions, a.messages, a.timeout))
    print(orjson.dumps(res).decode())
    sys.exit(0 if res["complete"] else 1)


if __name__ == "__main__":
    main()
