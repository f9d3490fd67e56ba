"""The source contract: what a decoder thread hands to the muxer.

A source is any object with::

    uri: str            # for messages, password already removed (errors.redact_uri)
    live: bool          # True: when its queue is full the oldest frame is dropped (and counted);
                        # False (files): the source thread blocks, no frame is lost
    def frames(self, *, device: torch.device, source_id) -> Iterator[SourceFrame]: ...
    def close(self) -> None: ...

``frames`` is called once, on the source's own thread; it decodes lazily and raises
``SourceError`` (``DecodeError`` / ``StreamUnavailable``) naming the source when it cannot go on.
Returning ends the stream (EOS). ``close`` may be called from another thread to stop it early.
Optional: ``state`` (a ``SourceState`` string) for live sources that reconnect.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol, runtime_checkable

import torch

from ..frame import ColorMatrix, PixelFormat, SourceFrame

__all__ = ["SourceFrame", "Source", "SourceState", "PixelFormat", "ColorMatrix", "DEFAULT_MAX_PIXELS"]

# SourceFrame, PixelFormat and ColorMatrix live in ``vidflow.frame`` (imported by ops and the muxer)

#: streams declaring more pixels per frame are refused before the decoder allocates (8192 x 8192)
DEFAULT_MAX_PIXELS = 1 << 26

#: what ``source.state`` says: the same names as ``stats.SOURCE_STATES``
SourceState = Literal["starting", "running", "stalled", "reconnecting", "ended", "failed"]


@runtime_checkable
class Source(Protocol):
    uri: str
    live: bool

    def frames(self, *, device: torch.device, source_id: int | str) -> Iterator[SourceFrame]: ...

    def close(self) -> None: ...
