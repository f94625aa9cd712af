"""sensors_sim: seeded simulators and replayers of Thurrock roadside sensor feeds.

A library first: :func:`build_feed` and :func:`write_feed` turn the shared site registry
into a reproducible feed of CONTRACT.md §2 messages, with faults only on demand; the
``sensors-sim`` console script (:mod:`sensors_sim.cli`) wraps it.
"""

from .errors import SimulatorError
from .faults import FaultRates
from .generate import FeedOptions, Summary, build_feed, write_feed

__all__ = ["FaultRates", "FeedOptions", "SimulatorError", "Summary", "build_feed", "write_feed"]
