"""Shared test settings: deterministic hypothesis profile."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("thurrock", derandomize=True, deadline=None, max_examples=200,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("thurrock")
