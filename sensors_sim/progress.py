"""A dependency-free progress bar and the closing summary, both for stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["Progress", "format_bar", "format_summary"]


def format_bar(label: str, done: int, total: int | None, elapsed_s: float, width: int = 30
               ) -> str:
    """Return one progress line: a bar when the total is known, else a running count.

    >>> format_bar("writing", 50, 100, 2.0, width=10)
    'writing [#####-----]  50.0% 50/100 25/s'
    >>> format_bar("sent", 7, None, 0.0)
    'sent 7 messages'
    """
    rate = f" {done / elapsed_s:,.0f}/s" if elapsed_s > 0 else ""
    if not total:
        return f"{label} {done:,} messages{rate}"
    frac = min(done / total, 1.0)
    fill = int(frac * width)
    bar = "#" * fill + "-" * (width - fill)
    return f"{label} [{bar}] {100 * frac:5.1f}% {done:,}/{total:,}{rate}"


class Progress:
    """A carriage-return progress bar on a stream, drawn only when it is a terminal."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 enabled: bool | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label, self.total, self.done = label, total, 0
        self._clock = clock
        self._t0 = self._last = clock()

    def __call__(self, n: int) -> None:
        """Advance by ``n`` units; redraw at most ten times a second."""
        self.done += n
        now = self._clock()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        self.stream.write("\r" + format_bar(self.label, self.done, self.total,
                                            self._clock() - self._t0) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def format_summary(title: str, counts: Mapping[str, object]) -> str:
    """Format a closing summary as aligned ``name: value`` lines under a title.

    >>> print(format_summary("done", {"messages": 3, "rate": "1/s"}))
    done
      messages  3
      rate      1/s
    """
    width = max((len(k) for k in counts), default=0)
    lines = [title] + [f"  {k:<{width}}  {v}" for k, v in counts.items()]
    return "\n".join(lines)
