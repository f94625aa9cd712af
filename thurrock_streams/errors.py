"""The project's exceptions: one root, a few specific kinds."""

from __future__ import annotations

__all__ = [
    "InvalidReading",
    "SettingsError",
    "SinkError",
    "StackError",
    "ThurrockError",
]


class ThurrockError(Exception):
    """Root of every error Thurrock Streams raises on purpose."""


class SettingsError(ThurrockError):
    """A setting from the environment has a value that cannot be used."""


class StackError(ThurrockError):
    """The local stack (broker or store) cannot be started, found or stopped."""


class SinkError(ThurrockError):
    """The store refused or could not take a write; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class InvalidReading(ThurrockError):
    """A reading breaks CONTRACT.md §2; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str, row: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.row = row
