"""The worker's HTTP pages: counters (JSON), Prometheus metrics and a health page."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import faust

    from .app import Runtime

__all__ = ["register_pages", "snapshot"]


def snapshot(rt: Runtime) -> dict[str, Any]:
    """Counters of every pipeline and the sink's state."""
    s = rt.sink.writer.stats
    lat = np.asarray(rt.sink.latency_ms, dtype=np.float64)
    lanes = (rt.traffic.lane, rt.air.lane, rt.alerts.lane, rt.notify.lane, rt.sink.lane)
    pipelines = {}
    for agent in (rt.traffic, rt.air):
        c = agent.processor.counters
        pipelines[agent.kind] = {
            "readings_in": c.readings_in, "accepted": c.accepted,
            "deadlettered": dict(c.deadlettered), "rekeyed_messages": c.rekeyed_messages,
            "replayed_skipped": c.replayed_skipped, "windows_closed": c.windows_closed,
            "heartbeats_in": c.heartbeats_in, "heartbeats": c.heartbeats,
            "heartbeats_deadlettered": dict(c.heartbeats_deadlettered),
            "sites": len(agent.cache), "quiet_sites": agent.quiet_now,
            "quiet_cut_lag_s": agent.cut_lag_s if math.isfinite(agent.cut_lag_s) else None,
        }
    return {
        "pipelines": pipelines,
        "alerts": {**rt.alerts.counters.as_dict(), "notifiers": rt.dispatcher.stats()},
        "lanes": {lane.name: lane.counts.as_dict() for lane in lanes},
        "sink": {
            "written_points": s.written_points, "pending_points": s.pending_points,
            "retries": s.retries, "rejected_points": s.rejected_points,
            "last_error": s.last_error, "last_error_at": s.last_error_at,
            "outage_s": (time.time() - s.outage_since) if s.outage_since else 0.0,
            "close_to_store_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "close_to_store_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        },
    }


def prometheus(snap: dict[str, Any]) -> str:
    """The snapshot in Prometheus text exposition format."""
    lines = []
    for kind, c in snap["pipelines"].items():
        for name in ("readings_in", "accepted", "rekeyed_messages", "replayed_skipped",
                     "windows_closed", "heartbeats_in", "heartbeats"):
            lines.append(f'thurrock_{name}_total{{pipeline="{kind}"}} {c[name]}')
        for reason, n in sorted(c["deadlettered"].items()):
            lines.append(f'thurrock_deadlettered_total{{pipeline="{kind}",reason="{reason}"}} {n}')
        for reason, n in sorted(c["heartbeats_deadlettered"].items()):
            lines.append(f'thurrock_heartbeats_deadlettered_total{{pipeline="{kind}",'
                         f'reason="{reason}"}} {n}')
        lines.append(f'thurrock_quiet_sites{{pipeline="{kind}"}} {c["quiet_sites"]}')
    a = snap["alerts"]
    lines.append(f"thurrock_alert_records_total {a['records']}")
    for state, n in sorted(a["events"].items()):
        lines.append(f'thurrock_alert_events_total{{state="{state}"}} {n}')
    for name, st in sorted(a["notifiers"].items()):
        for k in ("sent", "failed_attempts", "gave_up", "dropped", "queued"):
            if k in st:
                lines.append(f'thurrock_notifier_{k}{{notifier="{name}"}} {st[k]}')
    sink = snap["sink"]
    lines += [
        f"thurrock_sink_written_points_total {sink['written_points']}",
        f"thurrock_sink_pending_points {sink['pending_points']}",
        f"thurrock_sink_retries_total {sink['retries']}",
        f"thurrock_sink_rejected_points_total {sink['rejected_points']}",
        f"thurrock_sink_outage_seconds {sink['outage_s']:.3f}",
    ]
    for lane, counts in sorted(snap["lanes"].items()):
        for name, n in counts.items():
            lines.append(f'thurrock_lane_{name}_total{{lane="{lane}"}} {n}')
    return "\n".join(lines) + "\n"


def register_pages(app: faust.App, rt: Runtime) -> None:
    """Serve ``/counters`` (JSON), ``/metrics`` (Prometheus) and ``/healthz`` (200 while
    the worker runs) on the worker's web port; nothing else is served there."""

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/counters")
    async def counters(web: Any, request: Any) -> Any:
        return web.json(snapshot(rt))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.text(prometheus(snapshot(rt)), content_type="text/plain; version=0.0.4")
