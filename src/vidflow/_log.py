"""Structured logs for the command line (``vidflow run --log-format json --log-level info``).

Every line carries a UTC timestamp, the level, the logger and the message, then the record's
``extra`` fields (``log.info("source back", extra={"source": "cam1", "missed_s": 10.2})``)::

    ts=2026-12-03T15:48:01.123Z level=info logger=vidflow.sources msg="source back" source=cam1 missed_s=10.2

or, with ``format="json"``, one JSON object per line with the same keys. Text is passed
through :func:`~vidflow.errors.redact_uri`, so a camera password never reaches a log.

On a terminal a status line (the progress of ``vidflow run``) can stay at the bottom:
:func:`status` draws it, and each log line is written above it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import IO, Any

from .errors import redact_uri

__all__ = ["FORMATS", "LEVELS", "KeyValueFormatter", "JsonFormatter", "setup", "setup_from_env", "teardown", "status",
           "clear_status"]

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
ENV_FORMAT, ENV_LEVEL = "VIDFLOW_LOG_FORMAT", "VIDFLOW_LOG_LEVEL"

#: attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _ts(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


def _plain(v: Any) -> Any:
    """A JSON-ready value: numbers, booleans and None stay, the rest becomes redacted text."""
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return round(v, 6)
    return redact_uri(v)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The keys of one line, in order: ts, level, logger, msg, the extras, exc."""
    out: dict[str, Any] = {"ts": _ts(record.created), "level": record.levelname.lower(), "logger": record.name,
                           "msg": redact_uri(record.getMessage())}
    for k, v in vars(record).items():
        if k not in _STANDARD and not k.startswith("_") and k not in out:
            out[k] = _plain(v)
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = redact_uri(logging.Formatter().formatException(record.exc_info))
    return out


def _kv(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    if s and all(c.isalnum() or c in "._-:/@+*,[]()%" for c in s):
        return s
    return json.dumps(s, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value ...`` (values with spaces are quoted)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_kv(v)}" for k, v in fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the keys of :class:`KeyValueFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(fields(record), ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):
    """A stream handler that keeps a status line (if any) below the log lines on a terminal."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self.stream = stream        # (StreamHandler put sys.stderr in for None)
        self.line = ""
        self.mark = True            # ours: replaced by the next setup()

    # stream None: whatever sys.stderr is when a record comes (it may be replaced meanwhile)
    @property
    def stream(self) -> IO[str]:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str] | None) -> None:
        self._fixed = value

    @property
    def tty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            with _status_lock:
                if self.line:
                    self.stream.write("\r\033[K")
                self.stream.write(msg + "\n")
                if self.line:
                    self.stream.write(self.line)
                self.stream.flush()
        except Exception:  # noqa: BLE001 - logging never breaks the program
            self.handleError(record)


_status_lock = threading.RLock()
_handler: _Handler | None = None


def setup(level: str | int = "info", format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send log records to ``stream`` (stderr) in ``format`` (``"text"``: key=value, ``"json"``).

    ``level`` applies to vidflow's own loggers; other libraries log their warnings and errors.
    Calling it again replaces the handler it installed before (not anyone else's). The choice
    is also put into the environment (``VIDFLOW_LOG_FORMAT`` / ``VIDFLOW_LOG_LEVEL``) so child
    processes (decode workers) can log the same way: :func:`setup_from_env`."""
    global _handler
    if format not in FORMATS:
        raise ValueError(f"log format: expected one of {list(FORMATS)}, got {format!r}")
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)
    if not isinstance(lvl, int):
        raise ValueError(f"log level: expected one of {list(LEVELS)}, got {level!r}")
    teardown()
    root = logging.getLogger()
    h = _Handler(stream)
    h.setFormatter(JsonFormatter() if format == "json" else KeyValueFormatter())
    root.addHandler(h)
    root.setLevel(max(logging.WARNING, lvl) if lvl > logging.NOTSET else logging.WARNING)
    logging.getLogger("vidflow").setLevel(lvl)
    os.environ[ENV_FORMAT], os.environ[ENV_LEVEL] = format, logging.getLevelName(lvl).lower()
    _handler = h
    return h


def teardown() -> None:
    """Remove the handler :func:`setup` installed (if any)."""
    global _handler
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "mark", False):
            root.removeHandler(h)
    _handler = None


def setup_from_env(stream: IO[str] | None = None) -> logging.Handler | None:
    """In a child process: log as the parent set up (nothing when it did not)."""
    fmt = os.environ.get(ENV_FORMAT)
    if fmt not in FORMATS:
        return None
    return setup(os.environ.get(ENV_LEVEL, "info"), fmt, stream)


def status(line: str) -> bool:
    """Draw ``line`` as the terminal's status line, below the logs; False (nothing drawn) when
    logs do not go to a terminal through :func:`setup`."""
    h = _handler
    if h is None or not h.tty:
        return False
    with _status_lock:
        h.line = line
        h.stream.write("\r\033[K" + line)
        h.stream.flush()
    return True


def clear_status() -> None:
    """Remove the status line (before the summary is printed)."""
    h = _handler
    if h is None or not h.line:
        return
    with _status_lock:
        h.line = ""
        h.stream.write("\r\033[K")
        h.stream.flush()
