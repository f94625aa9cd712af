"""Kafka security: the one place that turns Settings into each Kafka client's options.

Every Kafka client the project creates takes its security options from here: the Faust
worker (:func:`faust_credentials`), the dashboard's aiokafka consumer
(:func:`aiokafka_options`), and the kafka-python clients of the CLI, the live view, the
``topics`` command and the simulator (:func:`kafka_python_options`). One TLS policy for
all of them (:func:`ssl_context`): the system's trust store, or only the CA bundle in
``KAFKA_SSL_CAFILE``, with the broker's host name checked.

The options returned hold the SASL password in clear, because the client needs it: hand
them to the client and nowhere else. :func:`describe` is what may be logged.
"""

from __future__ import annotations

import ssl
from typing import Any

from ..errors import SettingsError
from ..settings import SASL_MECHANISMS, Settings

__all__ = ["aiokafka_options", "describe", "faust_credentials", "kafka_python_options",
           "ssl_context"]


def _uses_tls(s: Settings) -> bool:
    return s.kafka_security_protocol in ("SSL", "SASL_SSL")


def _uses_sasl(s: Settings) -> bool:
    return s.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _check(s: Settings) -> None:
    if _uses_sasl(s):
        if s.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise SettingsError(f"KAFKA_SASL_MECHANISM={s.kafka_sasl_mechanism!r} is not one "
                                f"of {', '.join(SASL_MECHANISMS)}")
        if not s.kafka_sasl_username or not s.kafka_sasl_password:
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} needs "
                                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
    if s.kafka_ssl_cafile and not _uses_tls(s):
        raise SettingsError(f"KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL="
                            f"{s.kafka_security_protocol} does not use TLS (SSL or SASL_SSL)")


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context for Kafka (None without TLS): certificates and host names checked,
    against ``KAFKA_SSL_CAFILE`` when set, else the system's trust store."""
    _check(s)
    if not _uses_tls(s):
        return None
    try:
        return ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"KAFKA_SSL_CAFILE={s.kafka_ssl_cafile!r} cannot be read as a "
                            f"PEM CA bundle: {exc}") from None


def faust_credentials(s: Settings) -> Any:
    """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
    import faust

    context = ssl_context(s)
    if _uses_sasl(s):
        return faust.SASLCredentials(username=s.kafka_sasl_username,
                                     password=s.kafka_sasl_password.get(),
                                     mechanism=s.kafka_sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_options(s: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (AIOKafkaConsumer, AIOKafkaProducer)."""
    opts: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    context = ssl_context(s)
    if context is not None:
        opts["ssl_context"] = context
    if _uses_sasl(s):
        opts.update(sasl_mechanism=s.kafka_sasl_mechanism,
                    sasl_plain_username=s.kafka_sasl_username,
                    sasl_plain_password=s.kafka_sasl_password.get())
    return opts


def kafka_python_options(s: Settings) -> dict[str, Any]:
    """Keyword arguments for a kafka-python client (KafkaConsumer, KafkaProducer,
    KafkaAdminClient); the same TLS context as the other clients."""
    # aiokafka and kafka-python name these options alike.
    return aiokafka_options(s)


def describe(s: Settings) -> str:
    """The Kafka security in force, for logs and plans: never the password."""
    parts = [f"security {s.kafka_security_protocol}"]
    if _uses_sasl(s):
        parts.append(f"SASL {s.kafka_sasl_mechanism} as {s.kafka_sasl_username!r}")
    if _uses_tls(s):
        parts.append(f"CA {s.kafka_ssl_cafile}" if s.kafka_ssl_cafile
                     else "CA: system trust store")
    return ", ".join(parts)
