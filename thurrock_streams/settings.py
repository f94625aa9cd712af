"""Settings: one typed object, built once from the environment (CONTRACT.md §7)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from .errors import SettingsError

__all__ = ["SASL_MECHANISMS", "Secret", "Settings"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
#: SASL mechanisms every Kafka client of the project supports (Faust, aiokafka, kafka-python).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value; call only where it is handed to a client."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _env_float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:  # also rejects NaN
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
    return value


#: The consumer group's session timeout (s), fixed in the app (docs/operations.md).
SESSION_TIMEOUT_S = 10.0


def _request_timeout(env: Mapping[str, str], rebalance_s: float) -> float:
    """Kafka request timeout (s): by default 30 s, and 10 s more than the rebalance
    timeout when that is longer (a JoinGroup request is answered only when the rebalance
    ends). It bounds every wait on the broker, including Faust's table-recovery steps."""
    name = "THURROCK_REQUEST_TIMEOUT_S"
    value = _env_float(env, name, max(30.0, rebalance_s + 10.0), SESSION_TIMEOUT_S)
    if value <= rebalance_s:
        raise SettingsError(f"{name}={value:g} must be longer than "
                            f"THURROCK_REBALANCE_TIMEOUT_S={rebalance_s:g}")
    return value


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
    return value


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class Settings:
    """Every setting of the processor; times in seconds, names as in CONTRACT.md §7."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    influx_url: str = "http://127.0.0.1:8428"
    influx_token: Secret = field(default_factory=lambda: Secret(""))
    influx_org: str = "thurrock"
    influx_bucket: str = "thurrock"
    # TLS to InfluxDB: a CA bundle to trust (PEM) and whether to verify at all.
    influx_ca_file: str = ""
    influx_verify_ssl: bool = True
    allowed_lateness_s: float = 30.0
    idle_flush_s: float = 60.0
    max_clock_skew_s: float = 300.0
    # Kafka security for real clusters (SASL/SSL).
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: Secret = field(default_factory=lambda: Secret(""))
    kafka_ssl_cafile: str = ""
    # Operational knobs beyond the contract (documented in docs/operations.md).
    app_id: str = "thurrock-streams"
    topic_partitions: int = 4
    topic_replication_factor: int = 1
    rebalance_timeout_s: float = 3.0
    request_timeout_s: float = 30.0
    sink_batch_size: int = 5000
    sink_max_backoff_s: float = 30.0
    # The address the worker's web server (/counters, /metrics, /healthz) listens on.
    web_host: str = "127.0.0.1"
    # Alerts (CONTRACT.md §6; docs/alerts.md): the rules file and the notifiers.
    alert_rules_file: str = ""
    alert_log: bool = True
    alert_webhook_url: str = ""
    alert_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    alert_smtp_host: str = ""
    alert_smtp_port: int = 25
    alert_smtp_from: str = "thurrock-streams@localhost"
    alert_smtp_to: tuple[str, ...] = ()
    alert_smtp_username: str = ""
    alert_smtp_password: Secret = field(default_factory=lambda: Secret(""))
    alert_smtp_starttls: bool = False
    alert_smtp_allow_plaintext_login: bool = False
    alert_notify_max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        # An SMTP login without TLS sends the password in clear (AUTH PLAIN/LOGIN is only
        # base64): refuse it at start-up unless the operator says so explicitly.
        if (self.alert_smtp_host and (self.alert_smtp_username or self.alert_smtp_password)
                and not self.alert_smtp_starttls and not self.alert_smtp_allow_plaintext_login):
            raise SettingsError(
                "ALERT_SMTP_USERNAME/ALERT_SMTP_PASSWORD are set without "
                "ALERT_SMTP_STARTTLS=true: the SMTP login would cross the network in clear. "
                "Set ALERT_SMTP_STARTTLS=true (the server must offer STARTTLS), or "
                "ALERT_SMTP_ALLOW_PLAINTEXT_LOGIN=true to accept that risk")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; raise SettingsError on a bad value."""
        e = os.environ if env is None else env
        rebalance = _env_float(e, "THURROCK_REBALANCE_TIMEOUT_S", 3.0, 0.5)
        protocol = e.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper() or "PLAINTEXT"
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
                                "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
        mechanism = (e.get("KAFKA_SASL_MECHANISM") or "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of "
                                + ", ".join(SASL_MECHANISMS))
        return cls(
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS") or cls.kafka_bootstrap_servers,
            topic_prefix=e.get("TOPIC_PREFIX", ""),
            influx_url=(e.get("INFLUX_URL") or cls.influx_url).rstrip("/"),
            influx_token=Secret(e.get("INFLUX_TOKEN", "")),
            influx_org=e.get("INFLUX_ORG") or cls.influx_org,
            influx_bucket=e.get("INFLUX_BUCKET") or cls.influx_bucket,
            influx_ca_file=e.get("INFLUX_CA_FILE", ""),
            influx_verify_ssl=_env_bool(e, "INFLUX_VERIFY_SSL", True),
            allowed_lateness_s=_env_float(e, "ALLOWED_LATENESS_S", 30.0, 0.0),
            idle_flush_s=_env_float(e, "IDLE_FLUSH_S", 60.0, 0.0),
            max_clock_skew_s=_env_float(e, "MAX_CLOCK_SKEW_S", 300.0, 0.0),
            kafka_security_protocol=protocol,  # type: ignore[arg-type]
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username=e.get("KAFKA_SASL_USERNAME", ""),
            kafka_sasl_password=Secret(e.get("KAFKA_SASL_PASSWORD", "")),
            kafka_ssl_cafile=e.get("KAFKA_SSL_CAFILE", ""),
            app_id=e.get("THURROCK_APP_ID") or cls.app_id,
            topic_partitions=_env_int(e, "THURROCK_TOPIC_PARTITIONS", 4, 1),
            topic_replication_factor=_env_int(e, "THURROCK_TOPIC_REPLICATION_FACTOR", 1, 1),
            rebalance_timeout_s=rebalance,
            request_timeout_s=_request_timeout(e, rebalance),
            sink_batch_size=_env_int(e, "THURROCK_SINK_BATCH_SIZE", 5000, 1),
            sink_max_backoff_s=_env_float(e, "THURROCK_SINK_MAX_BACKOFF_S", 30.0, 0.1),
            web_host=e.get("THURROCK_WEB_HOST", "").strip() or cls.web_host,
            alert_rules_file=e.get("ALERT_RULES_FILE", ""),
            alert_log=_env_bool(e, "ALERT_LOG", True),
            alert_webhook_url=e.get("ALERT_WEBHOOK_URL", ""),
            alert_webhook_secret=Secret(e.get("ALERT_WEBHOOK_SECRET", "")),
            alert_smtp_host=e.get("ALERT_SMTP_HOST", ""),
            alert_smtp_port=_env_int(e, "ALERT_SMTP_PORT", 25, 1),
            alert_smtp_from=e.get("ALERT_SMTP_FROM") or cls.alert_smtp_from,
            alert_smtp_to=tuple(a.strip() for a in e.get("ALERT_SMTP_TO", "").split(",")
                                if a.strip()),
            alert_smtp_username=e.get("ALERT_SMTP_USERNAME", ""),
            alert_smtp_password=Secret(e.get("ALERT_SMTP_PASSWORD", "")),
            alert_smtp_starttls=_env_bool(e, "ALERT_SMTP_STARTTLS", False),
            alert_smtp_allow_plaintext_login=_env_bool(e, "ALERT_SMTP_ALLOW_PLAINTEXT_LOGIN",
                                                       False),
            alert_notify_max_backoff_s=_env_float(e, "ALERT_NOTIFY_MAX_BACKOFF_S", 300.0, 0.1),
        )

    def topic(self, name: str) -> str:
        """Return the full topic name for a contract topic name, prefix included."""
        return f"{self.topic_prefix}{name}"

    @property
    def group_id(self) -> str:
        """The Faust app id: the consumer group, and the stem of every internal topic
        (table changelogs, re-key topics). It carries ``TOPIC_PREFIX`` too, so two
        deployments with different prefixes on one cluster share no state or work
        (CONTRACT.md §1)."""
        return f"{self.topic_prefix}{self.app_id}"

    def describe(self) -> dict[str, str]:
        """Return the settings as strings for logs; secrets stay masked."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
