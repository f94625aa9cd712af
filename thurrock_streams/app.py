"""The one Faust app: settings, topics, tables and agents of Thurrock Streams."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.types.transports import TransportT
from faust.web import Web
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from .adapters import kafka as kafka_security
from .agents.alerts import AlertAgent, NotifyAgent
from .agents.lane import LaneTransport
from .agents.readings import ReadingsAgent
from .agents.sink import SinkAgent
from .air import AirPipeline
from .alerts.notify import Dispatcher, notifiers_from_settings
from .alerts.rules import Rules, load_rules
from .settings import SESSION_TIMEOUT_S, Settings
from .topics import (
    AIR_AGGREGATES,
    AIR_READINGS,
    DEADLETTER,
    TRAFFIC_AGGREGATES,
    TRAFFIC_READINGS,
)
from .traffic import TrafficPipeline
from .web import register_pages

__all__ = ["PagesOnlyWeb", "Runtime", "ThurrockApp", "ThurrockWorker", "app", "build_app",
           "runtime"]


def _credentials(s: Settings) -> Any:
    """Faust's broker credentials, from the one Kafka security builder."""
    return kafka_security.faust_credentials(s)


class PagesOnlyWeb(AiohttpWeb):
    """Faust's aiohttp web server without Faust's own views: no ``/table`` (table data),
    ``/router`` (the cluster's worker addresses), ``/``, ``/graph``, statistics or
    ``/performance``. Only the pages the app registers (web.py) are served."""

    default_blueprints = ()
    production_blueprints = ()
    debug_blueprints = ()
    optional_blueprints = ()


class ThurrockWorker(faust.Worker):
    """Faust's worker without its terminal spinner.

    For the spinner, Faust sets the root logger to DEBUG whenever the log level is WARN or
    above, so that every debug line of aiokafka (several per record sent) was made into a
    log record and filtered: a few per cent of a busy worker's time (docs/performance.md).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None


class ThurrockApp(faust.App):
    """Faust's app serving only the project's pages, whose consumer hands the agents'
    topics over in whole batches (agents/lane.py), with hooks run at the very start of a
    rebalance (before Faust waits for unacknowledged events)."""

    def _new_web(self) -> Web:
        return PagesOnlyWeb(self)

    def _new_transport(self) -> TransportT:
        return LaneTransport(self.conf.broker_consumer, self)

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        for hook in getattr(self, "rebalance_hooks", ()):
            hook()


class Runtime:
    """The app's parts, reachable from the web pages and from tests."""

    def __init__(self, app: faust.App, settings: Settings, rules: Rules) -> None:
        self.settings = settings
        self.rules = rules
        stuck = (rules.stuck_samples, rules.stuck_fields)
        self.traffic = ReadingsAgent(app, settings, TrafficPipeline.create(
            settings.allowed_lateness_s, settings.max_clock_skew_s, *stuck), TRAFFIC_READINGS,
            TRAFFIC_AGGREGATES, DEADLETTER)
        self.air = ReadingsAgent(app, settings, AirPipeline.create(
            settings.allowed_lateness_s, settings.max_clock_skew_s, *stuck), AIR_READINGS,
            AIR_AGGREGATES, DEADLETTER)
        self.sink = SinkAgent(app, settings)
        self.alerts = AlertAgent(app, settings, rules)
        self.dispatcher = Dispatcher(notifiers_from_settings(settings),
                                     max_backoff_s=settings.alert_notify_max_backoff_s)
        self.notify = NotifyAgent(app, settings, self.dispatcher)
        app.rebalance_hooks = [self.notify.release_all]  # type: ignore[attr-defined]
        app.on_before_shutdown.connect(self._on_shutdown)

    async def _on_shutdown(self, *args: Any, **kwargs: Any) -> None:
        # Give queued notifications a moment; what stays undelivered stays unacked in Kafka.
        await self.dispatcher.stop(5.0)


def build_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """Create the Faust app and wire every agent onto it."""
    servers = [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")]
    app = ThurrockApp(
        settings.group_id,
        broker=servers,
        broker_credentials=_credentials(settings),
        store="memory://",
        Worker=ThurrockWorker,
        datadir=str(Path(tempfile.gettempdir()) / f"thurrock-streams-{settings.group_id}"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # Short group timeouts: a worker joins in seconds and a dead one is replaced fast.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=SESSION_TIMEOUT_S,
        # Bounds each broker request and each of Faust's recovery steps (its default, 90 s,
        # once held a worker that long after a rebalance; docs/operations.md).
        broker_request_timeout=settings.request_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=65_536,
        # Up to 4 MiB a partition a fetch (Faust: 1 MiB): a backlog of single readings comes
        # in steps of tens of thousands of messages, so that a site's several readings share
        # one step and one changelog record (docs/performance.md).
        consumer_max_fetch_size=4 << 20,
        producer_acks=-1,
        # Faust stops a worker whose table has read a changelog partition past the end the
        # broker reports (a check for an on-disk store kept beside a truncated topic). The
        # tables here are in memory, so it only ever fires on the local broker (Tansu),
        # which reports the end as the last record batch's first offset + 1: after a
        # worker is killed between a step's changelog records and the last one, which is
        # sent alone, a standby that read that whole batch stood "past" it and the worker
        # taking the partition over stopped (docs/architecture.md, "State and crash
        # safety").
        recovery_consistency_check=False,
        web_port=6066,
        # Loopback unless told otherwise (THURROCK_WEB_HOST; a cluster sets 0.0.0.0).
        web_bind=settings.web_host,
    )
    rt = Runtime(app, settings, load_rules(settings.alert_rules_file or None))
    register_pages(app, rt)
    return app, rt


app, runtime = build_app(Settings.from_env())
