"""Shared test settings: deterministic hypothesis profile, third-party warnings."""

from __future__ import annotations

import warnings

# kafka-python 3 reads its protocol schemas with a deprecated importlib API at import time,
# before pytest's own warning filters apply to the importing conftest.
warnings.filterwarnings("ignore", r"(open|read)_text is deprecated", DeprecationWarning)

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("thurrock", derandomize=True, deadline=None, max_examples=200,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("thurrock")
