"""Stable seeding: one independent random stream per (seed, site, purpose, period).

Streams are keyed by what they are for, never by position in a list, so adding a site,
changing the time range or turning a fault on does not reshuffle any other stream. This is
``numpy.random.SeedSequence`` spawning with explicit spawn keys (what ``spawn()`` does
with consecutive integers).
"""

from __future__ import annotations

import zlib
from enum import IntEnum

import numpy as np

__all__ = ["Stream", "rng_for", "site_key"]

#: Spawn key used instead of a site key for streams shared by every site (weather).
REGION_KEY = 0xFFFF_FFFF


class Stream(IntEnum):
    """What a random stream is used for; part of its spawn key."""

    DAY = 1
    VEHICLES = 2
    INCIDENTS = 3
    AIR_KNOTS = 4
    EPISODES = 5
    FAULTS = 6
    WEATHER = 7
    MESSAGES = 8
    WEBTRIS = 9
    AIR_NOISE = 10


def site_key(site_id: str) -> int:
    """Return a stable 32-bit key for a site id (CRC-32 of its UTF-8 bytes).

    >>> site_key("A13-STIFFORD-EB") == site_key("A13-STIFFORD-EB")
    True
    """
    return zlib.crc32(site_id.encode("utf-8"))


def rng_for(seed: int, key: int, stream: Stream, period: int = 0) -> np.random.Generator:
    """Return the generator for one site (or region) key, purpose and period index.

    >>> float(rng_for(1, 7, Stream.DAY, 3).random()) == float(rng_for(1, 7, Stream.DAY, 3).random())
    True
    """
    # Periods before 1970 are not used; the offset keeps spawn keys non-negative anyway.
    seq = np.random.SeedSequence(seed, spawn_key=(key, int(stream), period + 1_000_000))
    return np.random.Generator(np.random.PCG64(seq))
