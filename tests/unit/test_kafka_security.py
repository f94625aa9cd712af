"""Kafka security reaches every Kafka client the project creates, checked in the clients'
own configuration: the Faust worker's consumer (through Faust's own translation of its
credentials), the worker's aiokafka reader, the kafka-python clients of the CLI, the live
view, the ``topics`` command and the simulator. Each client object is built for real
(none connects) and its configuration read back."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from sensors_sim.publish import producer_config
from thurrock_streams import cli, watch
from thurrock_streams.adapters import kafka as ks
from thurrock_streams.app import _credentials
from thurrock_streams.errors import SettingsError
from thurrock_streams.settings import Settings

from .tls import LoopbackCA, make_ca

PASSWORD = "s3cr3t-Pa55-w0rd"  # a test value, looked for in logs
CLOSED = "127.0.0.1:1"  # nothing listens here: a client that tried to connect would fail


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _settings(protocol: str, mechanism: str = "PLAIN", cafile: str = "") -> Settings:
    env = {"KAFKA_BOOTSTRAP_SERVERS": CLOSED, "KAFKA_SECURITY_PROTOCOL": protocol,
           "KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SSL_CAFILE": cafile}
    if protocol.startswith("SASL"):
        env |= {"KAFKA_SASL_USERNAME": "thurrock-streams", "KAFKA_SASL_PASSWORD": PASSWORD}
    return Settings.from_env(env)


# (protocol, mechanism, with the test CA): every combination a council cluster may use.
CASES = [
    ("PLAINTEXT", "PLAIN", False),
    ("SSL", "PLAIN", True),
    ("SSL", "PLAIN", False),
    ("SASL_PLAINTEXT", "PLAIN", False),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256", False),
    ("SASL_SSL", "PLAIN", True),
    ("SASL_SSL", "SCRAM-SHA-256", True),
    ("SASL_SSL", "SCRAM-SHA-512", True),
]
IDS = [f"{p}-{m}-{'ca' if c else 'system'}" for p, m, c in CASES]


def _expect_tls(ctx: Any, protocol: str, ca: LoopbackCA | None) -> None:
    if protocol not in ("SSL", "SASL_SSL"):
        assert ctx is None
        return
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    subjects = [dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()]
    if ca is not None:
        assert subjects == [ca.ca_subject], "only the CA file is trusted"


def _expect_sasl(protocol: str, mechanism: str, got: dict[str, Any]) -> None:
    if protocol.startswith("SASL"):
        assert (got["sasl_mechanism"], got["sasl_plain_username"],
                got["sasl_plain_password"]) == (mechanism, "thurrock-streams", PASSWORD)
    else:
        assert got.get("sasl_plain_password") in (None, "")


def _aiokafka_config(client: Any) -> dict[str, Any]:
    c = client._client if isinstance(client, AIOKafkaConsumer) else client.client
    return {"security_protocol": c._security_protocol, "ssl_context": c._ssl_context,
            "sasl_mechanism": c._sasl_mechanism, "sasl_plain_username": c._sasl_plain_username,
            "sasl_plain_password": c._sasl_plain_password}


def _build_aiokafka(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    async def build() -> tuple[dict[str, Any], dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=CLOSED, **options)
        producer = AIOKafkaProducer(bootstrap_servers=CLOSED, **options)
        # Neither started: nothing was sent anywhere.
        return _aiokafka_config(consumer), _aiokafka_config(producer)

    return asyncio.run(build())


@pytest.mark.parametrize(("protocol", "mechanism", "with_ca"), CASES, ids=IDS)
def test_faust_worker_consumer(ca: LoopbackCA, protocol: str, mechanism: str,
                               with_ca: bool) -> None:
    s = _settings(protocol, mechanism, str(ca.ca_file) if with_ca else "")
    creds = _credentials(s)
    assert (creds is None) == (protocol == "PLAINTEXT")
    # What Faust's aiokafka driver hands its consumer and producer for these credentials.
    auth = dict(credentials_to_aiokafka_auth(creds))
    for got in _build_aiokafka(auth):
        assert got["security_protocol"] == protocol
        _expect_tls(got["ssl_context"], protocol, ca if with_ca else None)
        _expect_sasl(protocol, mechanism, got)


@pytest.mark.parametrize(("protocol", "mechanism", "with_ca"), CASES, ids=IDS)
def test_dashboard_aiokafka_client(ca: LoopbackCA, protocol: str, mechanism: str,
                                with_ca: bool) -> None:
    s = _settings(protocol, mechanism, str(ca.ca_file) if with_ca else "")
    for got in _build_aiokafka(ks.aiokafka_options(s)):
        assert got["security_protocol"] == protocol
        _expect_tls(got["ssl_context"], protocol, ca if with_ca else None)
        _expect_sasl(protocol, mechanism, got)


@pytest.mark.parametrize(("protocol", "mechanism", "with_ca"), CASES, ids=IDS)
def test_kafka_python_clients(ca: LoopbackCA, protocol: str, mechanism: str,
                              with_ca: bool) -> None:
    """The CLI's partition check, the live view, the simulator's producer and the topics
    command's admin client."""
    s = _settings(protocol, mechanism, str(ca.ca_file) if with_ca else "")
    built = []
    # api_version given: kafka-python then builds the client without asking a broker.
    consumer = KafkaConsumer(api_version=(2, 8), **watch.consumer_config(s))
    built.append(consumer.config)
    consumer.close()
    cli_consumer = KafkaConsumer(bootstrap_servers=[CLOSED], api_version=(2, 8),
                                 **cli._kafka_python_security(s))
    built.append(cli_consumer.config)
    cli_consumer.close()
    producer = KafkaProducer(api_version=(2, 8), **producer_config(CLOSED, s))
    built.append(producer.config)
    # Not timeout=0: its network thread, left running, draws reconnect jitter from `random`
    # while a later Hypothesis test runs, which Hypothesis reports as a flaky strategy.
    producer.close(timeout=5)
    for got in built:
        assert got["security_protocol"] == protocol
        _expect_tls(got["ssl_context"], protocol, ca if with_ca else None)
        _expect_sasl(protocol, mechanism, got)
    # The admin client asks a broker as it is built: check its options against the
    # options it takes instead.
    from thurrock_streams.topicplan import admin_config

    admin = admin_config(s)
    assert set(admin) <= set(KafkaAdminClient.DEFAULT_CONFIG)
    assert admin["security_protocol"] == protocol
    _expect_sasl(protocol, mechanism, admin)


def test_the_tls_context_trusts_only_the_ca_file_and_checks_the_host(ca: LoopbackCA,
                                                                     tmp_path: Path) -> None:
    """A real handshake on loopback with the context every Kafka client gets."""
    server_ctx = ca.server_context()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            for _ in range(3):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except (ssl.SSLError, OSError):
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        def handshake(context: ssl.SSLContext, host: str) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"x")

        good = ks.ssl_context(_settings("SASL_SSL", "SCRAM-SHA-512", str(ca.ca_file)))
        assert good is not None
        handshake(good, "localhost")
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            handshake(good, "kafka.example.invalid")
        other = make_ca(tmp_path / "other", name="Another CA")
        wrong = ks.ssl_context(_settings("SSL", cafile=str(other.ca_file)))
        assert wrong is not None
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            handshake(wrong, "localhost")
        thread.join(10)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_secrets_are_never_logged(ca: LoopbackCA, all_logs: pytest.LogCaptureFixture,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    s = _settings("SASL_SSL", "SCRAM-SHA-512", str(ca.ca_file))
    _build_aiokafka(ks.aiokafka_options(s))
    _build_aiokafka(dict(credentials_to_aiokafka_auth(_credentials(s))))
    p = KafkaProducer(api_version=(2, 8), **producer_config(CLOSED, s))
    p.close(timeout=5)  # its network thread ends here (see test_kafka_python_clients)
    text = "\n".join(r.getMessage() for r in all_logs.records)
    said = ks.describe(s) + repr(_credentials(s)) + repr(s) + str(s.describe())
    out = capsys.readouterr()
    assert PASSWORD not in text + said + out.out + out.err
    assert ks.describe(s) == (f"security SASL_SSL, SASL SCRAM-SHA-512 as 'thurrock-streams', "
                              f"CA {ca.ca_file}")


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
     "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CAFILE='/nonexistent/ca.pem' cannot be read"),
    ({"KAFKA_SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt"}, "does not use TLS"),
])
def test_unworkable_security_is_a_clear_error(env: dict[str, str], message: str) -> None:
    s = Settings.from_env(env)
    with pytest.raises(SettingsError, match=message):
        ks.aiokafka_options(s)
    with pytest.raises(SettingsError, match=message):
        cli.check_tls(s)


def test_an_unknown_mechanism_is_refused_by_the_settings() -> None:
    with pytest.raises(SettingsError, match="KAFKA_SASL_MECHANISM='GSSAPI' is not one of "
                                            "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"):
        Settings.from_env({"KAFKA_SASL_MECHANISM": "gssapi"})


def test_a_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SettingsError, match="cannot be read as a PEM CA bundle"):
        ks.ssl_context(_settings("SSL", cafile=str(bad)))
