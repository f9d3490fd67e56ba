"""vidflow's exceptions, as one small tree::

    VidflowError                 base of everything vidflow raises on purpose
    ├── ConfigError              bad YAML / overrides; carries ``path`` ("stages[0].detect.conf")
    ├── SourceError              a source failed; carries ``source_id`` and ``uri`` (password removed)
    │   ├── DecodeError          the bitstream could not be decoded / has no frames
    │   └── StreamUnavailable    could not open or connect (missing file, refused, timeout)
    ├── StageError               a stage raised; carries ``stage`` (name) and ``frames``
    ├── SinkError                a sink failed to write or close
    └── PipelineStateError       a Pipeline used wrongly (run twice, add to a stopped one...)

Bad arguments to constructors raise plain ``ValueError`` listing what is allowed.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "VidflowError",
    "ConfigError",
    "SourceError",
    "DecodeError",
    "StreamUnavailable",
    "StageError",
    "SinkError",
    "PipelineStateError",
    "as_source_error",
    "redact_uri",
]

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


def redact_uri(uri: Any) -> str:
    """Return ``uri`` as text with any password replaced by ``***``.

    ``rtsp://admin:secret@cam/s1`` -> ``rtsp://admin:***@cam/s1``. Anything that is not a URI
    with credentials comes back unchanged (as ``str``). Also applied to free text, so an error
    message that embeds a URI is safe to print.
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(uri))


class VidflowError(Exception):
    """Base class of every error vidflow raises on purpose."""


class ConfigError(VidflowError):
    """A pipeline description is wrong. ``path`` names the place, e.g. ``muxer.batch_size``."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = redact_uri(path)
        super().__init__(redact_uri(f"{path}: {message}" if path else message))


class SourceError(VidflowError):
    """A source failed. ``source_id`` and ``uri`` (with any password removed) say which."""

    def __init__(self, message: str, *, source_id: int | str | None = None, uri: Any = None) -> None:
        self.source_id = source_id
        self.uri = redact_uri(uri) if uri is not None else None
        where = []
        if source_id is not None:
            where.append(f"source {source_id}")
        if self.uri:
            where.append(f"({self.uri})")
        prefix = " ".join(where)
        super().__init__(redact_uri(f"{prefix}: {message}" if prefix else message))

    def __reduce__(self) -> tuple:
        # picklable (a decode process sends its source's error to the pipeline) with its message as is
        return _rebuild_source_error, (type(self), str(self), self.source_id, self.uri)


def _rebuild_source_error(cls: type[SourceError], text: str, source_id: Any, uri: Any) -> SourceError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.source_id, err.uri = source_id, uri
    return err


class DecodeError(SourceError):
    """The stream was opened but could not be decoded (corrupt, unsupported, no frames)."""


class StreamUnavailable(SourceError):
    """The stream could not be opened or reached (missing file, refused, timed out)."""


class StageError(VidflowError):
    """A stage raised. ``stage`` is its name; ``frames`` the ``FrameInfo``s of the batch."""

    def __init__(self, message: str, *, stage: str, frames: tuple = ()) -> None:
        self.stage = stage
        self.frames = tuple(frames)
        ids = sorted({(f.source_id, f.frame_num) for f in self.frames}, key=lambda k: (isinstance(k[0], str), k))[:8]
        where = f" on frames (source, frame) {ids}" if ids else ""
        super().__init__(f"stage {stage!r}{where}: {message}")


class SinkError(VidflowError):
    """A sink could not write or close."""


class PipelineStateError(VidflowError):
    """A pipeline was used in a way its state does not allow (e.g. ``run()`` while running)."""


def as_source_error(err: BaseException, *, source_id: int | str | None, uri: Any = None,
                    cls: type[SourceError] | None = None) -> SourceError:
    """``err`` as a :class:`SourceError` naming the source: returned unchanged when it already is
    one (its ``source_id`` / ``uri`` filled in when missing), else wrapped (``cls``, default
    :class:`DecodeError`) with ``err`` as its cause. The one place lower-level errors become
    source errors (threads, decode processes and the pipeline all use it)."""
    if isinstance(err, SourceError):
        if err.source_id is None and source_id is not None:
            return type(err)(str(err), source_id=source_id, uri=uri if err.uri is None else err.uri)
        return err
    wrapped = (cls or DecodeError)(f"{type(err).__name__}: {err}", source_id=source_id, uri=uri)
    wrapped.__cause__ = err
    return wrapped
