"""Alert notifiers against real local servers: an aiohttp receiver and an aiosmtpd SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
import email
import functools
import hashlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from thurrock_streams.alerts.notify import (
    Dispatcher,
    LogNotifier,
    NotifyError,
    SmtpNotifier,
    WebhookNotifier,
    event_id,
    notifiers_from_settings,
)
from thurrock_streams.errors import SettingsError
from thurrock_streams.settings import Secret, Settings

SECRET = "s3cr3t-hook-value"
URL_TOKEN = "T0KEN-in-path"


def make_event(i: int = 0, state: str = "raised") -> dict[str, Any]:
    return {"site_id": "TH1 Grays", "rule": "daqi:no2", "severity": "high", "state": state,
            "value": 7, "threshold": 7, "ts": 1_700_000_000.0 + 3600 * i,
            "message": "NO2 DAQI 7 (High)"}


async def until(cond: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Poll ``cond`` until it holds; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.002)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Receiver:
    """A real HTTP server that records POSTs and answers the scripted statuses, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes, Any]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append((dict(request.headers), body, peer))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status < 300 else "nope")


@contextlib.asynccontextmanager
async def receiver(statuses: tuple[int, ...] = ()) -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver(statuses)
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield rec, f"http://127.0.0.1:{port}/hooks/{URL_TOKEN}?k=1"
    finally:
        await runner.cleanup()


class Recorder:
    """A notifier that records events; optionally waits on a gate before finishing."""

    def __init__(self, name: str = "rec", gate: asyncio.Event | None = None) -> None:
        self.name = name
        self.gate = gate
        self.entered: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        self.entered.append(event)
        if self.gate is not None:
            await self.gate.wait()
        self.events.append(event)


# --- event id ---------------------------------------------------------------------------

def test_event_id_is_stable_and_as_specified() -> None:
    ev = make_event()
    key = "TH1 Grays\x1fdaqi:no2\x1fraised\x1f1700000000.0"
    assert event_id(ev) == hashlib.sha256(key.encode()).hexdigest()[:32]
    assert event_id(dict(ev, value=99, message="other")) == event_id(ev)
    assert event_id(make_event(state="cleared")) != event_id(ev)
    assert event_id(make_event(1)) != event_id(ev)


# --- webhook ----------------------------------------------------------------------------

def test_webhook_posts_signed_json_and_reuses_its_connection() -> None:
    async def main() -> None:
        async with receiver() as (rec, url):
            times = iter([1_700_000_000.9, 1_700_000_060.2])
            hook = WebhookNotifier(url, Secret(SECRET), clock=lambda: next(times))
            try:
                await hook.send(make_event(0))
                await hook.send(make_event(1))
            finally:
                await hook.close()
        assert len(rec.requests) == 2
        for i, (headers, body, _peer) in enumerate(rec.requests):
            assert orjson.loads(body) == make_event(i)
            assert headers["Content-Type"] == "application/json"
            assert headers["X-Thurrock-Event-Id"] == event_id(make_event(i))
            ts = ("1700000000", "1700000060")[i]  # whole seconds of each attempt
            assert headers["X-Thurrock-Timestamp"] == ts
            want = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
            assert hmac.compare_digest(headers["X-Thurrock-Signature"], f"v1={want.hexdigest()}")
        assert rec.requests[0][2] == rec.requests[1][2]  # one keep-alive connection

    asyncio.run(main())


def test_webhook_without_secret_sends_no_signature() -> None:
    async def main() -> None:
        async with receiver() as (rec, url):
            hook = WebhookNotifier(url, None)
            await hook.send(make_event())
            await hook.close()
        headers = rec.requests[0][0]
        assert "X-Thurrock-Signature" not in headers
        assert "X-Thurrock-Timestamp" not in headers
        assert headers["X-Thurrock-Event-Id"] == event_id(make_event())

    asyncio.run(main())


class VerifyingReceiver:
    """A webhook receiver as docs/alerts.md tells one to be: it accepts a request only when
    its timestamp is at most 5 minutes from its own clock, the HMAC-SHA256 over
    "<timestamp>.<body>" matches (constant-time compare), and the signature was not seen
    before (remembered for the 5 minutes it stays acceptable)."""

    TOLERANCE_S = 300

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.seen: dict[str, int] = {}
        self.accepted: list[dict[str, Any]] = []
        self.answers: list[tuple[int, str]] = []

    def verify(self, headers: Any, body: bytes) -> tuple[int, str]:
        ts, sig = headers.get("X-Thurrock-Timestamp", ""), headers.get("X-Thurrock-Signature", "")
        if not ts.isdigit():
            return 400, "no timestamp"
        now = int(time.time())
        if abs(now - int(ts)) > self.TOLERANCE_S:
            return 401, "stale timestamp"
        want = "v1=" + hmac.new(self.secret, ts.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig.encode(), want.encode()):
            return 401, "bad signature"
        self.seen = {s: t for s, t in self.seen.items() if now - t <= self.TOLERANCE_S}
        if sig in self.seen:
            return 409, "replayed"
        self.seen[sig] = int(ts)
        return 200, "ok"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, reason = self.verify(request.headers, body)
        self.answers.append((status, reason))
        if status == 200:
            self.accepted.append(orjson.loads(body))
        return web.Response(status=status, text=reason)


def test_a_receiver_verifying_signatures_takes_the_genuine_delivery_only() -> None:
    async def main() -> None:
        rec = VerifyingReceiver(SECRET.encode())
        app = web.Application()
        app.router.add_post("/hook", rec.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        hook = WebhookNotifier(url, Secret(SECRET))
        stale = WebhookNotifier(url, Secret(SECRET), clock=lambda: time.time() - 301)
        forged = WebhookNotifier(url, Secret("not-the-secret"))
        try:
            ev = make_event()
            body, headers = hook.body_and_headers(ev)
            async with aiohttp.ClientSession() as http:
                async def post(data: bytes) -> int:
                    async with http.post(url, data=data, headers=headers) as resp:
                        return resp.status

                assert await post(body) == 200                                 # genuine
                assert await post(body) == 409                                 # replay
                assert await post(body.replace(b'"value":7', b'"value":1')) == 401  # tampered
            with pytest.raises(NotifyError, match="401") as info:
                await stale.send(make_event(1))                                # 301 s old
            assert info.value.permanent
            with pytest.raises(NotifyError, match="401"):
                await forged.send(make_event(2))                               # wrong key
            await hook.send(make_event(3))            # the notifier's own delivery path
        finally:
            for n in (hook, stale, forged):
                await n.close()
            await runner.cleanup()
        assert rec.answers == [(200, "ok"), (409, "replayed"), (401, "bad signature"),
                               (401, "stale timestamp"), (401, "bad signature"), (200, "ok")]
        assert rec.accepted == [make_event(), make_event(3)]

    asyncio.run(main())


@pytest.mark.parametrize(("status", "permanent"), [
    (400, True), (401, True), (404, True), (410, True), (302, False),
    (408, False), (429, False), (500, False), (503, False),
])
def test_webhook_failure_kinds(status: int, permanent: bool) -> None:
    async def main() -> None:
        async with receiver((status,)) as (_rec, url):
            hook = WebhookNotifier(url, None)
            with pytest.raises(NotifyError) as info:
                await hook.send(make_event())
            await hook.close()
        assert info.value.permanent is permanent
        assert str(status) in str(info.value)
        assert URL_TOKEN not in str(info.value)

    asyncio.run(main())


def test_a_malformed_event_fails_permanently_instead_of_retrying_forever() -> None:
    bad = {"site_id": "TH1", "rule": "x", "state": "raised"}  # no ts
    with pytest.raises(NotifyError) as info:
        WebhookNotifier("http://127.0.0.1:9/x", None).body_and_headers(bad)
    assert info.value.permanent
    with pytest.raises(NotifyError) as info:
        SmtpNotifier("127.0.0.1", 25, "a@x.test", ("b@x.test",)).message(bad)
    assert info.value.permanent
    asyncio.run(LogNotifier().send(bad))  # the log line still goes out


def test_webhook_rejects_a_non_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("ftp://example.invalid/x", None)


def test_dispatcher_retries_until_delivered_then_acks_once() -> None:
    async def main() -> None:
        async with receiver((500, 500)) as (rec, url):
            d = Dispatcher([WebhookNotifier(url, Secret(SECRET))], max_backoff_s=0.01)
            done: list[int] = []
            d.submit(make_event(), lambda: done.append(1))
            await until(lambda: bool(done))
            stats = d.stats()["webhook"]
            await d.stop(0)
        assert done == [1]
        assert len(rec.requests) == 3
        assert {r[0]["X-Thurrock-Event-Id"] for r in rec.requests} == {event_id(make_event())}
        assert stats["sent"] == 1
        assert stats["failed_attempts"] == 2
        assert stats["gave_up"] == 0
        assert stats["queued"] == 0
        assert "500" in stats["last_error"]

    asyncio.run(main())


def test_a_permanent_4xx_gives_up_and_still_acks(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with receiver((422,)) as (rec, url):
            d = Dispatcher([WebhookNotifier(url, None)], max_backoff_s=0.01)
            done: list[int] = []
            d.submit(make_event(), lambda: done.append(1))
            await until(lambda: bool(done))
            stats = d.stats()["webhook"]
            await d.stop(0)
        assert len(rec.requests) == 1
        assert stats["gave_up"] == 1
        assert stats["sent"] == 0
        assert stats["failed_attempts"] == 1

    with caplog.at_level(logging.ERROR, logger="thurrock_streams.alerts"):
        asyncio.run(main())
    assert any("gave up" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_a_down_receiver_does_not_delay_other_notifiers(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hooks/{URL_TOKEN}"

    async def main() -> None:
        rec = Recorder()
        d = Dispatcher([WebhookNotifier(url, Secret(SECRET)), rec], max_backoff_s=0.02)
        done: list[int] = []
        t0 = time.monotonic()
        d.submit(make_event(), lambda: done.append(1))
        assert time.monotonic() - t0 < 0.5  # submit never waits for delivery
        assert d.stats()["webhook"]["failed_attempts"] == 0
        await until(lambda: len(rec.events) == 1, timeout_s=1.0)
        await until(lambda: d.stats()["webhook"]["failed_attempts"] >= 3)
        stats = d.stats()
        await d.stop(0)
        assert rec.events == [make_event()]
        assert done == []  # the webhook still owes the event: no ack yet
        assert stats["rec"]["sent"] == 1
        assert stats["webhook"]["sent"] == 0
        assert stats["webhook"]["gave_up"] == 0
        assert stats["webhook"]["queued"] == 1
        assert stats["webhook"]["last_error"]
        assert d.stats()["webhook"]["queued"] == 1  # kept, unacked, after stop

        for value in (SECRET, URL_TOKEN):
            assert value not in str(stats)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert SECRET not in caplog.text
    assert URL_TOKEN not in caplog.text


def test_queue_overflow_drops_the_oldest_waiting_event(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        rec = Recorder(gate=gate)
        d = Dispatcher([rec], max_queue=2)
        done: list[int] = []
        d.submit(make_event(0), lambda: done.append(0))
        await until(lambda: len(rec.entered) == 1)  # event 0 is in delivery
        for i in (1, 2, 3):
            d.submit(make_event(i), functools.partial(done.append, i))
        assert done == [1]  # the dropped event's share is done at once
        assert d.stats()["rec"]["dropped"] == 1
        assert d.stats()["rec"]["queued"] == 3
        gate.set()
        await until(lambda: len(done) == 4)
        await d.stop(0)
        assert [e["ts"] for e in rec.events] == [make_event(i)["ts"] for i in (0, 2, 3)]
        assert done == [1, 0, 2, 3]

    with caplog.at_level(logging.ERROR, logger="thurrock_streams.alerts"):
        asyncio.run(main())
    assert any("dropped the oldest" in r.getMessage() for r in caplog.records)


def test_on_done_waits_for_every_notifier_and_runs_once() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        fast, slow = Recorder("fast"), Recorder("slow", gate=gate)
        d = Dispatcher([fast, slow])
        done: list[int] = []
        d.submit(make_event(), lambda: done.append(1))
        await until(lambda: len(fast.events) == 1 and len(slow.entered) == 1)
        assert done == []
        gate.set()
        await until(lambda: bool(done))
        await d.stop(0)
        assert done == [1]

    asyncio.run(main())


def test_no_notifiers_acks_at_once_and_names_are_unique() -> None:
    done: list[int] = []
    Dispatcher([]).submit(make_event(), lambda: done.append(1))
    assert done == [1]
    assert list(Dispatcher([Recorder("x"), Recorder("x")]).stats()) == ["x", "x#2"]
    d = Dispatcher([Recorder()])
    d.submit([1, 2], lambda: done.append(2))  # type: ignore[arg-type]  # not an object: acked
    assert done == [1, 2]
    assert d.stats()["rec"]["queued"] == 0


def test_a_failing_on_done_does_not_stop_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("ack failed")

    async def main() -> None:
        rec = Recorder()
        d = Dispatcher([rec])
        done: list[int] = []
        d.submit(make_event(0), boom)
        d.submit(make_event(1), lambda: done.append(1))
        await until(lambda: bool(done))
        await d.stop(0)
        assert len(rec.events) == 2

    with caplog.at_level(logging.ERROR, logger="thurrock_streams.alerts"):
        asyncio.run(main())
    assert any("on_done" in r.getMessage() for r in caplog.records)


def test_submit_before_start_and_from_another_thread() -> None:
    rec = Recorder()
    d = Dispatcher([rec])
    done: list[str] = []
    d.submit(make_event(0), lambda: done.append("early"))  # no loop yet: queued

    async def main() -> None:
        d.start()
        await until(lambda: done == ["early"])
        await asyncio.get_running_loop().run_in_executor(
            None, d.submit, make_event(1), lambda: done.append("thread"))
        await until(lambda: len(done) == 2)
        await d.stop(1.0)

    asyncio.run(main())
    assert done == ["early", "thread"]
    assert len(rec.events) == 2


def test_stop_lets_queued_events_finish_within_the_timeout() -> None:
    async def main() -> None:
        rec = Recorder()
        d = Dispatcher([rec])
        for i in range(5):
            d.submit(make_event(i))
        await d.stop(2.0)
        assert len(rec.events) == 5

    asyncio.run(main())


# --- log --------------------------------------------------------------------------------

def test_log_notifier_levels(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        n = LogNotifier()
        for state in ("raised", "escalated", "cleared"):
            await n.send(make_event(state=state))

    with caplog.at_level(logging.DEBUG, logger="thurrock_streams.alerts"):
        asyncio.run(main())
    recs = [r for r in caplog.records if r.name == "thurrock_streams.alerts"]
    assert [r.levelno for r in recs] == [logging.WARNING, logging.WARNING, logging.INFO]
    assert "RAISED daqi:no2 at TH1 Grays" in recs[0].getMessage()
    assert "2023-11-14T22:13:20+00:00" in recs[0].getMessage()


# --- SMTP -------------------------------------------------------------------------------

class SmtpSink:
    """aiosmtpd handler: records each message; refuses recipients at nobody@."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"right-password", handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = closed_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mx.test",
                            auth_require_tls=False, authenticator=sink.authenticate)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


RCPTS = ("ops@thurrock.test", "air@thurrock.test")


def test_smtp_sends_one_mail_per_event(smtp: tuple[SmtpSink, int]) -> None:
    sink, port = smtp
    n = SmtpNotifier("127.0.0.1", port, "alerts@thurrock.test", RCPTS)
    ev = make_event()
    asyncio.run(n.send(ev))

    assert len(sink.messages) == 1
    mail_from, rcpts, raw = sink.messages[0]
    assert mail_from == "alerts@thurrock.test"
    assert rcpts == list(RCPTS)
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == "[Thurrock Streams] RAISED daqi:no2 at TH1 Grays: NO2 DAQI 7 (High)"
    assert msg["X-Thurrock-Event-Id"] == event_id(ev)
    assert msg["To"] == ", ".join(RCPTS)
    part = msg.get_body(("plain",))
    assert part is not None
    body = part.get_content().replace("\r\n", "\n")
    for key in ("site_id", "rule", "severity", "state", "value", "threshold", "message"):
        assert f"{key}: {ev[key]}" in body
    assert "2023-11-14T22:13:20+00:00" in body
    assert orjson.loads(body.split("JSON:\n", 1)[1]) == ev


def test_smtp_login(smtp: tuple[SmtpSink, int], caplog: pytest.LogCaptureFixture) -> None:
    sink, port = smtp
    good = SmtpNotifier("127.0.0.1", port, "alerts@thurrock.test", RCPTS[:1],
                        username="streams", password=Secret("right-password"))
    bad = SmtpNotifier("127.0.0.1", port, "alerts@thurrock.test", RCPTS[:1],
                       username="streams", password=Secret("wrong-password"))

    async def main() -> None:
        await good.send(make_event())
        d = Dispatcher([bad], max_backoff_s=0.01)
        done: list[int] = []
        d.submit(make_event(1), lambda: done.append(1))
        await until(lambda: bool(done))
        stats = d.stats()["smtp"]
        await d.stop(0)
        assert stats["gave_up"] == 1  # 535 bad credentials: permanent
        assert "wrong-password" not in str(stats)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert sink.logins[0] == (b"streams", b"right-password")
    assert len(sink.messages) == 1
    assert "wrong-password" not in caplog.text
    assert "right-password" not in caplog.text
    assert "password" not in repr(bad)


def test_smtp_refused_recipients_fail_permanently(smtp: tuple[SmtpSink, int]) -> None:
    _sink, port = smtp
    n = SmtpNotifier("127.0.0.1", port, "alerts@thurrock.test", ("nobody@thurrock.test",))
    with pytest.raises(NotifyError) as info:
        asyncio.run(n.send(make_event()))
    assert info.value.permanent


def test_smtp_starttls_unsupported_is_permanent(smtp: tuple[SmtpSink, int]) -> None:
    _sink, port = smtp
    n = SmtpNotifier("127.0.0.1", port, "alerts@thurrock.test", RCPTS, starttls=True)
    with pytest.raises(NotifyError) as info:
        asyncio.run(n.send(make_event()))
    assert info.value.permanent


def test_smtp_server_down_is_transient() -> None:
    n = SmtpNotifier("127.0.0.1", closed_port(), "alerts@thurrock.test", RCPTS, timeout_s=2.0)
    with pytest.raises(NotifyError) as info:
        asyncio.run(n.send(make_event()))
    assert not info.value.permanent


# --- settings ---------------------------------------------------------------------------

def test_notifiers_from_settings() -> None:
    assert [n.name for n in notifiers_from_settings(Settings())] == ["log"]
    assert notifiers_from_settings(Settings(alert_log=False)) == []
    full = Settings(alert_webhook_url="https://hooks.example.test/x", alert_webhook_secret=Secret(
        SECRET), alert_smtp_host="mail.test", alert_smtp_port=587,
        alert_smtp_to=("a@x.test",), alert_smtp_username="u",
        alert_smtp_password=Secret("pw"), alert_smtp_starttls=True)
    ns = notifiers_from_settings(full)
    assert [type(n) for n in ns] == [LogNotifier, WebhookNotifier, SmtpNotifier]
    smtp_n = ns[2]
    assert isinstance(smtp_n, SmtpNotifier)
    assert (smtp_n.host, smtp_n.port, smtp_n.recipients, smtp_n.starttls) == (
        "mail.test", 587, ("a@x.test",), True)
    assert SECRET not in repr(ns)
    # SMTP needs recipients; a bad webhook URL is a settings error.
    assert notifiers_from_settings(Settings(alert_log=False, alert_smtp_host="mail.test")) == []
    with pytest.raises(SettingsError):
        notifiers_from_settings(Settings(alert_webhook_url="hooks.example.test/x"))


def test_a_withdrawn_event_is_neither_retried_nor_sent() -> None:
    """A rebalance withdraws undelivered events (another worker may deliver them): the
    one being retried stops at its next failure, a waiting one is never sent."""

    class Down:
        name = "down"

        def __init__(self) -> None:
            self.tries = 0

        async def send(self, event: dict[str, Any]) -> None:
            self.tries += 1
            raise NotifyError("receiver down")

    async def main() -> None:
        down = Down()
        d = Dispatcher([down], max_backoff_s=0.01)
        gone = False
        done: list[int] = []
        for i in range(2):
            d.submit(make_event(i), lambda i=i: done.append(i), withdrawn=lambda: gone)
        await until(lambda: down.tries >= 2)
        gone = True
        await until(lambda: done == [0, 1])
        tries = down.tries
        await asyncio.sleep(0.05)
        assert down.tries == tries  # nothing more was tried
        assert d.stats()["down"]["sent"] == 0
        await d.stop(0)

    asyncio.run(main())


SMTP_LOGIN = {"ALERT_SMTP_HOST": "mail.test", "ALERT_SMTP_TO": "a@x.test",
              "ALERT_SMTP_USERNAME": "streams", "ALERT_SMTP_PASSWORD": "pl41n-t3xt-pw"}


@pytest.mark.parametrize("env", [
    SMTP_LOGIN,
    {k: v for k, v in SMTP_LOGIN.items() if k != "ALERT_SMTP_USERNAME"},
    {k: v for k, v in SMTP_LOGIN.items() if k != "ALERT_SMTP_PASSWORD"},
    {**SMTP_LOGIN, "ALERT_SMTP_STARTTLS": "false", "ALERT_SMTP_ALLOW_PLAINTEXT_LOGIN": "no"},
])
def test_an_smtp_login_without_tls_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"ALERT_SMTP_STARTTLS=true.*"
                                            r"ALERT_SMTP_ALLOW_PLAINTEXT_LOGIN=true") as err:
        Settings.from_env(env)
    assert "pl41n-t3xt-pw" not in str(err.value)


@pytest.mark.parametrize(("env", "login_in_clear"), [
    ({**SMTP_LOGIN, "ALERT_SMTP_STARTTLS": "true"}, False),
    ({**SMTP_LOGIN, "ALERT_SMTP_ALLOW_PLAINTEXT_LOGIN": "true"}, True),
    ({k: v for k, v in SMTP_LOGIN.items() if k != "ALERT_SMTP_HOST"}, False),  # no e-mail
    ({"ALERT_SMTP_HOST": "mail.test", "ALERT_SMTP_TO": "a@x.test"}, False),   # no login
])
def test_an_smtp_login_goes_over_tls_or_is_allowed_explicitly(env: dict[str, str],
                                                               login_in_clear: bool) -> None:
    s = Settings.from_env(env)
    assert s.alert_smtp_allow_plaintext_login is login_in_clear


def test_the_worker_stops_at_start_up_on_an_smtp_login_in_clear(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from thurrock_streams.cli import main

    for k, v in SMTP_LOGIN.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ALERT_SMTP_STARTTLS", raising=False)
    monkeypatch.delenv("ALERT_SMTP_ALLOW_PLAINTEXT_LOGIN", raising=False)
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thurrock-streams: ALERT_SMTP_USERNAME/ALERT_SMTP_PASSWORD are set "
                          "without ALERT_SMTP_STARTTLS=true")
    assert "pl41n-t3xt-pw" not in err
