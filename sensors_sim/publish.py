"""Where messages go: a Kafka topic (kafka-python) or a JSONL file."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from thurrock_streams.adapters.kafka import kafka_python_options
from thurrock_streams.settings import Settings

from .errors import PublishError

__all__ = ["FileSink", "KafkaSink", "Message", "Sink", "message_from_line", "producer_config"]

#: (topic without prefix, key, value bytes)
Message = tuple[str, str | None, bytes]


class Sink(Protocol):
    """Something messages can be sent to."""

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        """Queue one message."""

    def close(self) -> None:
        """Deliver everything queued and release resources; raise PublishError on failures."""


def message_from_line(obj: Mapping[str, Any]) -> Message:
    """Turn a parsed JSONL line into a message: compact JSON value, or raw bytes from base64.

    >>> message_from_line({"topic": "air.readings", "key": "S", "value": {"ts": 1.0}})
    ('air.readings', 'S', b'{"ts":1.0}')
    """
    key = obj.get("key")
    if "value_b64" in obj:
        return str(obj["topic"]), key, base64.b64decode(obj["value_b64"])
    return str(obj["topic"]), key, orjson.dumps(obj["value"])


def producer_config(bootstrap: str, settings: Settings) -> dict[str, Any]:
    """The simulator's kafka-python producer options: acks=all, a small linger, and the
    Kafka security of ``settings`` from the project's one builder (adapters/kafka.py)."""
    return {"bootstrap_servers": bootstrap.split(","), "acks": "all", "linger_ms": 20,
            "client_id": "sensors-sim", **kafka_python_options(settings)}


class KafkaSink:
    """Publishes to Kafka with kafka-python: acks=all, keyed by site, small linger."""

    def __init__(self, bootstrap: str, topic_prefix: str = "",
                 settings: Settings | None = None) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        config = producer_config(bootstrap, settings or Settings.from_env())
        try:
            self._producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise PublishError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
        self._prefix = topic_prefix
        self._kafka_error = KafkaError
        self.failures = 0
        self._first_error: BaseException | None = None

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._first_error = self._first_error or exc

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        """Queue one message on ``prefix + topic``."""
        kb = key.encode("utf-8") if key is not None else None
        try:
            fut = self._producer.send(self._prefix + topic, key=kb, value=value)
        except self._kafka_error as exc:
            raise PublishError(f"sending to {self._prefix + topic} failed: {exc}") from exc
        fut.add_errback(self._failed)

    def close(self) -> None:
        """Flush, close, and raise PublishError if any message was refused."""
        try:
            self._producer.flush(timeout=60)
        except self._kafka_error as exc:
            raise PublishError(f"flushing to Kafka failed: {exc}") from exc
        finally:
            self._producer.close(timeout=10)
        if self.failures:
            raise PublishError(f"{self.failures} messages were not delivered; first error: "
                               f"{self._first_error!r}")


class FileSink:
    """Writes messages as JSONL lines (the ``generate`` format) to a file."""

    def __init__(self, path: Path) -> None:
        self._fh: BinaryIO = path.open("wb")

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        """Append one line; bytes that are not JSON go in ``value_b64``."""
        try:
            line = orjson.dumps({"topic": topic, "key": key, "value": orjson.Fragment(value)})
            orjson.loads(value)
        except orjson.JSONDecodeError:
            line = orjson.dumps({"topic": topic, "key": key,
                                 "value_b64": base64.b64encode(value).decode("ascii")})
        self._fh.write(line + b"\n")

    def close(self) -> None:
        """Close the file."""
        self._fh.close()
