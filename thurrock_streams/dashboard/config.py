"""The dashboard's own settings (CONTRACT.md §9), beside the processor's (§7)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import SettingsError
from ..settings import _env_float, _env_int
from .state import Staleness

__all__ = ["FEED_LABELS", "DashboardConfig"]

#: Marks the page shows in its header for a feed that is not from real sensors.
FEED_LABELS = ("", "SIMULATED", "REPLAY")


@dataclass(frozen=True)
class DashboardConfig:
    """``DASHBOARD_HOST``, ``DASHBOARD_PORT``, the stale thresholds and the feed mark."""

    host: str = "127.0.0.1"
    port: int = 8080
    staleness: Staleness = field(default_factory=Staleness)
    feed_label: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DashboardConfig:
        e = os.environ if env is None else env
        label = e.get("DASHBOARD_FEED", "").strip().upper()
        if label not in FEED_LABELS:
            raise SettingsError(f"DASHBOARD_FEED={label!r} is not one of SIMULATED, REPLAY "
                                "or empty (real sensors)")
        port = _env_int(e, "DASHBOARD_PORT", 8080, 0)
        if port > 65535:
            raise SettingsError(f"DASHBOARD_PORT={port} is not a TCP port")
        return cls(host=e.get("DASHBOARD_HOST") or "127.0.0.1", port=port,
                   staleness=Staleness(
                       traffic_s=_env_float(e, "DASHBOARD_STALE_TRAFFIC_S", 180.0, 1.0),
                       air_s=_env_float(e, "DASHBOARD_STALE_AIR_S", 1200.0, 1.0)),
                   feed_label=label)
