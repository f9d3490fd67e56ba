"""TRANSITIONAL shim: ``UriSource`` / ``RtspSource`` live in :mod:`vidflow.sources.uri`, the backoff
and stall clock in :mod:`vidflow.sources._reconnect`. Old imports keep working."""

from __future__ import annotations

from ._reconnect import StallClock, backoff_delay
from .uri import RtspSource, UriSource

__all__ = ["UriSource", "RtspSource", "StallClock", "backoff_delay"]
