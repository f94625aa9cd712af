"""Thurrock Streams: real-time traffic and air-quality stream processing."""

__all__ = ["__version__"]

__version__ = "0.1.0"
