"""The simulator's exceptions: one root under the project's root, a few specific kinds."""

from __future__ import annotations

from thurrock_streams.errors import ThurrockError

__all__ = ["InputFormatError", "PublishError", "SimulatorError", "UsageError"]


class SimulatorError(ThurrockError):
    """Root of every error sensors_sim raises on purpose."""


class UsageError(SimulatorError):
    """An option or argument has a value the simulator cannot use."""


class InputFormatError(SimulatorError):
    """A file given to ``replay`` cannot be read; ``line`` says where, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class PublishError(SimulatorError):
    """The Kafka broker could not be reached or refused messages."""
