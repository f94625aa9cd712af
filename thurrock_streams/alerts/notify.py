"""Alert notifiers: webhook, e-mail and log, behind a dispatcher that never blocks.

An alert event (CONTRACT.md §6) is a JSON-ready dict. A :class:`Notifier` delivers one
event and raises on failure; :class:`NotifyError` with ``permanent=True`` means "do not
try again". The :class:`Dispatcher` gives every notifier its own queue and worker task:
:meth:`Dispatcher.submit` returns at once, a failing notifier retries with exponential
backoff and jitter (capped) without delaying the others, and the caller's ``on_done``
runs once every notifier has delivered the event, given up on it or dropped it.

Secrets (webhook secret, SMTP password) and webhook URLs beyond scheme, host and port
are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..errors import SettingsError, ThurrockError
from ..settings import Secret, Settings

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Dispatcher",
    "LogNotifier",
    "Notifier",
    "NotifyError",
    "SmtpNotifier",
    "WebhookNotifier",
    "event_id",
    "notifiers_from_settings",
    "webhook_signature",
]

log = logging.getLogger("thurrock_streams.alerts")

_FIELDS = ("site_id", "rule", "severity", "state", "value", "threshold", "ts", "message")
_USER_AGENT = "thurrock-streams-alerts"
_INITIAL_BACKOFF_S = 0.5
_TRANSIENT_4XX = frozenset({408, 425, 429})


class NotifyError(ThurrockError):
    """A notifier could not deliver an event; ``permanent`` means retrying is pointless."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def event_id(event: dict[str, Any]) -> str:
    """The event's stable id: 32 hex chars of sha256 over site_id, rule, state and ts."""
    key = f"{event['site_id']}\x1f{event['rule']}\x1f{event['state']}\x1f{event['ts']!r}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class Notifier(Protocol):
    """Delivers alert events to people; ``send`` raises on failure."""

    name: str

    async def send(self, event: dict[str, Any]) -> None:
        """Deliver one event; raise (``NotifyError(permanent=True)`` to stop retries)."""
        ...


def _checked_id(event: dict[str, Any]) -> str:
    """The event id, or a permanent NotifyError when the event lacks an id field."""
    try:
        return event_id(event)
    except (KeyError, TypeError) as exc:
        raise NotifyError(f"malformed alert event: missing {exc}", permanent=True) from None


def _safe_url(url: str) -> str:
    """Scheme, host and port of a URL only: paths and queries may hold tokens."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}"


def _iso(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _one_line(text: Any, limit: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


#: Headers of a signed webhook request: the Unix time (whole seconds) of the attempt, and
#: ``v1=<hex HMAC-SHA256 over "<timestamp>.<body>">`` (docs/alerts.md: how to verify).
TIMESTAMP_HEADER = "X-Thurrock-Timestamp"
SIGNATURE_HEADER = "X-Thurrock-Signature"


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256 of ``ts.body``.

    >>> webhook_signature(b"k", "1700000000", b"{}")[:11]
    'v1=c6ef4734'
    """
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


class WebhookNotifier:
    """POSTs each event as JSON; with a secret, each attempt is signed with its time
    (HMAC-SHA256 over timestamp and body, as Stripe and Slack sign theirs), so a receiver
    can refuse a tampered, old or replayed request."""

    name = "webhook"

    def __init__(self, url: str, secret: Secret | None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook URL must be an http:// or https:// URL with a host")
        self._url = url
        self._safe = _safe_url(url)
        # Forms of the URL (or of its secret-bearing parts) to scrub from error messages.
        private = {url, parts.path, parts.query, parts.netloc.rpartition("@")[0]}
        self._private = sorted((p for p in private if len(p) >= 4), key=len, reverse=True)
        self._secret = secret if secret else None
        self._clock = clock
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        signed = "signed" if self._secret else "unsigned"
        return f"WebhookNotifier({self._safe}, {signed})"

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                headers={"User-Agent": _USER_AGENT})
            self._session_loop = loop
        return self._session

    def body_and_headers(self, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The exact request body and headers for one attempt to deliver an event (a
        retry is signed again, with its own time)."""
        try:
            body = orjson.dumps(event)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise NotifyError(f"event is not JSON-serialisable: {exc}", permanent=True) from None
        headers = {"Content-Type": "application/json", "X-Thurrock-Event-Id": _checked_id(event)}
        if self._secret is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = webhook_signature(self._secret.get().encode("utf-8"),
                                                          timestamp, body)
        return body, headers

    async def send(self, event: dict[str, Any]) -> None:
        """POST one event; non-2xx fails (4xx other than 408/425/429 permanently)."""
        body, headers = self.body_and_headers(event)
        session = self._get_session()
        try:
            async with session.post(self._url, data=body, headers=headers,
                                    allow_redirects=False) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return
                detail = _one_line((await resp.content.read(300)).decode("utf-8", "replace"),
                                   200)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            text = str(exc)
            for private in self._private:
                text = text.replace(private, "…")
            raise NotifyError(f"POST {self._safe} failed: {type(exc).__name__}: "
                              f"{_one_line(text, 300)}") from None
        permanent = 400 <= status < 500 and status not in _TRANSIENT_4XX
        raise NotifyError(f"POST {self._safe} answered HTTP {status}: {detail}",
                          permanent=permanent)

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class SmtpNotifier:
    """Sends one plain-text e-mail per event with the stdlib smtplib, in a worker thread."""

    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, recipients: tuple[str, ...],
                 username: str = "", password: Secret | None = None, starttls: bool = False,
                 timeout_s: float = 10.0) -> None:
        if not recipients:
            raise ValueError("SmtpNotifier needs at least one recipient")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username
        self._password = password if password else None
        self.starttls = starttls
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SmtpNotifier({self.host}:{self.port}, {len(self.recipients)} recipient(s))"

    def message(self, event: dict[str, Any]) -> EmailMessage:
        """The e-mail for one event: subject, headers and a plain-text body."""
        eid = _checked_id(event)
        state = str(event.get("state", "")).upper()
        subject = (f"[Thurrock Streams] {state} {event.get('rule', '')} at "
                   f"{event.get('site_id', '')}: {event.get('message', '')}")
        msg = EmailMessage()
        msg["Subject"] = _one_line(subject, 200)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(usegmt=True)
        domain = "".join(parseaddr(self.sender)[1].rpartition("@")[2].split())
        msg["Message-ID"] = f"<{eid}@{domain or 'thurrock-streams.invalid'}>"
        msg["X-Thurrock-Event-Id"] = eid
        lines = []
        for key in _FIELDS:
            value = event.get(key, "")
            if key == "ts":
                lines.append(f"{key}: {value!r} ({_iso(value)})")
            else:
                lines.append(f"{key}: {value}")
        for key in sorted(k for k in event if k not in _FIELDS):
            lines.append(f"{key}: {event[key]}")
        lines.append(f"event_id: {eid}")
        try:
            js = orjson.dumps(event, option=orjson.OPT_INDENT_2).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise NotifyError(f"event is not JSON-serialisable: {exc}", permanent=True) from None
        msg.set_content("\n".join(lines) + "\n\nJSON:\n" + js + "\n")
        return msg

    def _send_blocking(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password.get() if self._password else "")
            refused = smtp.send_message(msg, from_addr=self.sender,
                                        to_addrs=list(self.recipients))
        if refused:
            log.warning("smtp: %d recipient(s) refused event %s: %s", len(refused),
                        msg["X-Thurrock-Event-Id"],
                        ", ".join(f"{a} ({c})" for a, (c, _m) in refused.items()))

    async def send(self, event: dict[str, Any]) -> None:
        """Send one e-mail; 5xx answers fail permanently, the rest transiently."""
        msg = self.message(event)
        where = f"{self.host}:{self.port}"
        try:
            await asyncio.to_thread(self._send_blocking, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _m in exc.recipients.values()]
            raise NotifyError(f"SMTP {where} refused every recipient: {codes}",
                              permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise NotifyError(f"SMTP {where}: {exc}", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
                exc.smtp_error, bytes) else str(exc.smtp_error)
            raise NotifyError(f"SMTP {where} answered {exc.smtp_code}: {_one_line(text, 200)}",
                              permanent=exc.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"SMTP {where} failed: {type(exc).__name__}: "
                              f"{_one_line(exc, 200)}") from None


class LogNotifier:
    """Logs one line per event: WARNING when raised or escalated, INFO when cleared."""

    name = "log"

    async def send(self, event: dict[str, Any]) -> None:
        """Log the event."""
        level = logging.INFO if event.get("state") == "cleared" else logging.WARNING
        log.log(level, "alert %s %s at %s (%s): %s [value=%s threshold=%s ts=%s id=%s]",
                str(event.get("state", "")).upper(), event.get("rule"), event.get("site_id"),
                event.get("severity"), event.get("message"), event.get("value"),
                event.get("threshold"), _iso(event.get("ts")), _safe_event_id(event))


class _Ticket:
    """Counts the notifiers still owing one event; runs ``on_done`` when none is left."""

    __slots__ = ("on_done", "remaining")

    def __init__(self, remaining: int, on_done: Callable[[], None] | None) -> None:
        self.remaining = remaining
        self.on_done = on_done

    def share_done(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.on_done is not None:
            callback, self.on_done = self.on_done, None
            try:
                callback()
            except Exception:
                log.exception("alert on_done callback failed")


@dataclass
class _Item:
    event: dict[str, Any]
    ticket: _Ticket
    withdrawn: Callable[[], bool] | None = None

    def is_withdrawn(self) -> bool:
        """True once the caller took the event back (it is delivered elsewhere)."""
        return self.withdrawn is not None and self.withdrawn()


@dataclass
class _Lane:
    """One notifier's queue, worker and counters."""

    key: str
    notifier: Notifier
    waiting: deque[_Item] = field(default_factory=deque)
    current: _Item | None = None
    wake: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None
    sent: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0
    last_error: str = ""


class Dispatcher:
    """Fans events out to notifiers, one queue and worker task each; never blocks the caller.

    Call :meth:`submit` from the event loop's thread (other threads are handed over to the
    loop). Workers start lazily on the running loop, or with :meth:`start`. ``max_queue``
    bounds the events waiting per notifier (besides the one being delivered); beyond it the
    oldest waiting event of that notifier is dropped.
    """

    def __init__(self, notifiers: list[Notifier], max_backoff_s: float = 300.0,
                 max_queue: int = 10_000) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        if not max_backoff_s > 0:
            raise ValueError("max_backoff_s must be > 0")
        self.max_backoff_s = max_backoff_s
        self.max_queue = max_queue
        self._lanes: list[_Lane] = []
        seen: dict[str, int] = {}
        for n in notifiers:
            base = str(getattr(n, "name", type(n).__name__))
            seen[base] = seen.get(base, 0) + 1
            key = base if seen[base] == 1 else f"{base}#{seen[base]}"
            self._lanes.append(_Lane(key=key, notifier=n))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def start(self) -> None:
        """Start the workers on the running loop; a no-op for workers already running."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for lane in self._lanes:  # workers of a previous loop are gone with it
                lane.task = None
            self._loop = loop
            self._loop_thread = threading.get_ident()
        for lane in self._lanes:
            if lane.task is not None and not lane.task.done():
                continue
            lane.wake = wake = asyncio.Event()
            if lane.waiting:
                wake.set()
            lane.task = loop.create_task(self._work(lane, wake),
                                         name=f"alert-notifier-{lane.key}")
            lane.task.add_done_callback(self._worker_ended)

    def _running(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._loop is loop and all(
            lane.task is not None and not lane.task.done() for lane in self._lanes)

    def submit(self, event: dict[str, Any], on_done: Callable[[], None] | None = None,
               withdrawn: Callable[[], bool] | None = None) -> None:
        """Queue the event for every notifier; ``on_done`` runs once all have finished it.

        Once ``withdrawn()`` turns true the event is no longer sent nor retried (its
        ``on_done`` still runs, as for a delivered one).
        """
        if not isinstance(event, dict):
            log.error("alert dispatcher: ignored an event that is not an object (%s)",
                      type(event).__name__)
        if not self._lanes or not isinstance(event, dict):
            if on_done is not None:
                _Ticket(1, on_done).share_done()
            return
        loop = self._loop
        if (loop is not None and not loop.is_closed()
                and threading.get_ident() != self._loop_thread):
            loop.call_soon_threadsafe(self._enqueue, dict(event), on_done, withdrawn)
            return
        self._enqueue(dict(event), on_done, withdrawn)

    def _enqueue(self, event: dict[str, Any], on_done: Callable[[], None] | None,
                 withdrawn: Callable[[], bool] | None = None) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None  # no loop yet: queued until start()
        if running is not None and not self._running(running):
            self.start()
        ticket = _Ticket(len(self._lanes), on_done)
        for lane in self._lanes:
            if len(lane.waiting) >= self.max_queue:
                old = lane.waiting.popleft()
                lane.dropped += 1
                log.error("alert notifier %s: queue full (%d), dropped the oldest event %s",
                          lane.key, self.max_queue, _safe_event_id(old.event))
                old.ticket.share_done()
            lane.waiting.append(_Item(event, ticket, withdrawn))
            if lane.wake is not None:
                lane.wake.set()

    async def _work(self, lane: _Lane, wake: asyncio.Event) -> None:
        while True:
            if not lane.waiting:
                wake.clear()
                await wake.wait()
                continue
            item = lane.waiting.popleft()
            if item.is_withdrawn():
                item.ticket.share_done()
                continue
            lane.current = item
            try:
                await self._deliver(lane, item)
            except asyncio.CancelledError:
                lane.waiting.appendleft(item)  # kept (not acked) for a later start()
                raise
            finally:
                lane.current = None
            item.ticket.share_done()

    async def _deliver(self, lane: _Lane, item: _Item) -> None:
        delay = min(_INITIAL_BACKOFF_S, self.max_backoff_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                await lane.notifier.send(item.event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                lane.failed_attempts += 1
                lane.last_error = _one_line(f"{type(exc).__name__}: {exc}", 500)
                eid = _safe_event_id(item.event)
                if item.is_withdrawn():
                    log.info("alert notifier %s: event %s withdrawn (a rebalance), no "
                             "longer retried here", lane.key, eid)
                    return
                if isinstance(exc, NotifyError) and exc.permanent:
                    lane.gave_up += 1
                    log.error("alert notifier %s gave up on event %s: %s", lane.key, eid,
                              lane.last_error)
                    return
                pause = random.uniform(delay / 2, delay)  # noqa: S311 - jitter
                log.warning("alert notifier %s: attempt %d for event %s failed (%s); "
                            "retrying in %.2fs", lane.key, attempt, eid, lane.last_error, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            lane.sent += 1
            if attempt > 1:
                log.info("alert notifier %s delivered event %s after %d attempts", lane.key,
                         _safe_event_id(item.event), attempt)
            return

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("alert notifier worker %s stopped: %r", task.get_name(), task.exception())

    def pending(self) -> int:
        """Events queued or in delivery, summed over the notifiers."""
        return sum(len(lane.waiting) + (lane.current is not None) for lane in self._lanes)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let workers finish queued events for up to ``timeout_s``, then cancel them.

        Unfinished events stay queued without ``on_done`` (their Kafka messages stay
        unacknowledged); notifiers with a ``close()`` are closed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        while self.pending() and loop.time() < deadline:
            await asyncio.sleep(min(0.02, max(deadline - loop.time(), 0.0)))
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes:
            lane.task = None
            lane.wake = None
            close = getattr(lane.notifier, "close", None)
            if callable(close):
                try:
                    await close()
                except Exception as exc:
                    log.warning("alert notifier %s: close failed: %s", lane.key,
                                type(exc).__name__)
        self._loop = None
        self._loop_thread = None

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per notifier: sent, failed_attempts, gave_up, dropped, queued, last_error."""
        return {
            lane.key: {
                "sent": lane.sent,
                "failed_attempts": lane.failed_attempts,
                "gave_up": lane.gave_up,
                "dropped": lane.dropped,
                "queued": len(lane.waiting) + (lane.current is not None),
                "last_error": lane.last_error,
            }
            for lane in self._lanes
        }


def _safe_event_id(event: dict[str, Any]) -> str:
    try:
        return event_id(event)
    except (KeyError, TypeError):
        return "<no id>"


def notifiers_from_settings(settings: Settings) -> list[Notifier]:
    """The notifiers the settings enable: log, webhook, SMTP (in that order)."""
    out: list[Notifier] = []
    if settings.alert_log:
        out.append(LogNotifier())
    if settings.alert_webhook_url:
        try:
            out.append(WebhookNotifier(settings.alert_webhook_url,
                                       settings.alert_webhook_secret or None))
        except ValueError:
            raise SettingsError("ALERT_WEBHOOK_URL must be an http:// or https:// URL") from None
    if settings.alert_smtp_host:
        if settings.alert_smtp_to:
            out.append(SmtpNotifier(
                settings.alert_smtp_host, settings.alert_smtp_port, settings.alert_smtp_from,
                settings.alert_smtp_to, username=settings.alert_smtp_username,
                password=settings.alert_smtp_password or None,
                starttls=settings.alert_smtp_starttls))
        else:
            log.warning("ALERT_SMTP_HOST is set but ALERT_SMTP_TO is empty: no e-mail alerts")
    return out
