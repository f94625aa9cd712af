"""A batch of readings of one site, in columns (numpy arrays), in time order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["AIR_TOPIC", "TRAFFIC_TOPIC", "Batch", "Topic", "concat"]

Topic = Literal["traffic.readings", "air.readings"]
TRAFFIC_TOPIC: Topic = "traffic.readings"
AIR_TOPIC: Topic = "air.readings"


@dataclass
class Batch:
    """Readings of one site: ``columns`` in output order, ``ts`` first, all one length."""

    topic: Topic
    site_id: str
    columns: dict[str, NDArray[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["ts"]) if "ts" in self.columns else 0

    @property
    def ts(self) -> NDArray[np.float64]:
        """Event times, epoch seconds."""
        return self.columns["ts"].astype(np.float64, copy=False)

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> Batch:
        """Return a batch of the selected rows (integer indices or a boolean mask)."""
        return Batch(self.topic, self.site_id, {k: v[index] for k, v in self.columns.items()})

    def window(self, start: float, end: float) -> Batch:
        """Return the rows with ``start <= ts < end``."""
        ts = self.ts
        return self.take((ts >= start) & (ts < end))


def concat(batches: list[Batch]) -> Batch:
    """Join batches of one site end to end (columns must match)."""
    first = batches[0]
    cols = {k: np.concatenate([b.columns[k] for b in batches]) for k in first.columns}
    return Batch(first.topic, first.site_id, cols)
