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
import resource
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

#: Per partition and per fetch response: large enough that a fetch of frames is never cut
#: at one or two frames (aiokafka's default is 1 MB a partition).
MAX_PARTITION_FETCH_BYTES = 8 << 20
FETCH_MAX_BYTES = 64 << 20


async def consume(bootstrap: str, topic: str, partitions: int, expect: int,
                  timeout_s: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        fetch_max_bytes=FETCH_MAX_BYTES)
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
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
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
