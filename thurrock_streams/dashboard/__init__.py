"""The operators' web dashboard (``thurrock-streams dashboard``, CONTRACT.md §9): a live
map of Thurrock, a panel per site, the alerts, from the aggregates and alerts topics."""

from .config import DashboardConfig
from .state import DashboardState, Staleness

__all__ = ["DashboardConfig", "DashboardState", "Staleness"]
