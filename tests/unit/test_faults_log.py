"""Structured logs (``vidflow._log``): timestamped key=value or JSON lines carrying the records'
``extra`` fields (the sources' state changes: ``source=``, ``state=``...), passwords removed,
a status line kept below the logs on a terminal; and the CLI's flags choosing them."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from vidflow import _log
from vidflow._runner import progress_text
from vidflow.stats import RunSummary, SourceStats

TS = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture
def logs(monkeypatch):
    """Set up vidflow's handler on a buffer; undone afterwards (environment included)."""
    for k in (_log.ENV_FORMAT, _log.ENV_LEVEL):
        monkeypatch.setenv(k, "")
    buf = io.StringIO()
    root = logging.getLogger()
    saved = root.level, logging.getLogger("vidflow").level

    def use(fmt="text", level="info", stream=None):
        _log.setup(level, fmt, stream if stream is not None else buf)
        return buf

    yield use
    _log.teardown()
    root.setLevel(saved[0])
    logging.getLogger("vidflow").setLevel(saved[1])


def test_text_lines_carry_timestamp_level_and_extras(logs):
    buf = logs("text")
    logging.getLogger("vidflow.sources.uri").warning(
        "source %s back after %.1f s", "cam1", 10.2,
        extra={"source": "cam1", "state": "running", "missed_s": 10.2, "frames_missed": 255, "live": True})
    line = buf.getvalue().strip()
    assert TS.match(line), line
    assert (" level=warning logger=vidflow.sources.uri msg=\"source cam1 back after 10.2 s\" source=cam1 state=running "
            "missed_s=10.2 frames_missed=255 live=true") in line


def test_json_lines_parse_and_keep_types(logs):
    buf = logs("json")
    logging.getLogger("vidflow.x").error("lost", extra={"source": 3, "state": "reconnecting", "error": None})
    rec = json.loads(buf.getvalue())
    assert rec["level"] == "error" and rec["logger"] == "vidflow.x" and rec["msg"] == "lost"
    assert rec["source"] == 3 and rec["state"] == "reconnecting" and rec["error"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_passwords_never_reach_a_log_line(logs, fmt):
    buf = logs(fmt)
    try:
        raise OSError("cannot open rtsp://admin:hunter2@cam/1")
    except OSError:
        logging.getLogger("vidflow").exception("open rtsp://admin:hunter2@cam/1 failed",
                                               extra={"uri": "rtsp://admin:hunter2@cam/1"})
    out = buf.getvalue()
    assert "hunter2" not in out and "rtsp://admin:***@cam/1" in out and "OSError" in out


def test_levels_apply_to_vidflow_other_libraries_warn(logs):
    buf = logs("text", "warning")
    logging.getLogger("vidflow.a").info("hidden")
    logging.getLogger("vidflow.a").warning("shown")
    buf2 = logs("text", "debug")      # a second set-up replaces the first handler
    logging.getLogger("vidflow.a").debug("dbg")
    logging.getLogger("urllib3").info("library chatter")
    logging.getLogger("urllib3").warning("library warning")
    out = buf2.getvalue()
    assert out.count("shown") == 1 and "hidden" not in out and "dbg" in out
    assert "library chatter" not in out and "library warning" in out
    assert sum(getattr(h, "mark", False) for h in logging.getLogger().handlers) == 1
    with pytest.raises(ValueError, match="log format"):
        _log.setup("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        _log.setup("loud", "text")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_status_line_stays_below_the_logs_on_a_terminal(logs):
    tty = _Tty()
    logs("text", stream=tty)
    assert _log.status("2/2 sources running")
    logging.getLogger("vidflow").warning("a state change")
    _log.clear_status()
    screen = tty.getvalue()
    # the log line erased the status line, was written, and the status line was drawn again below it
    assert re.search(r"\r\x1b\[K.*msg=\"a state change\"\n2/2 sources running\r\x1b\[K$", screen), repr(screen)
    buf = logs("text")                 # not a terminal: no status line at all
    assert not _log.status("x") and buf.getvalue() == ""


def test_progress_text_counts_states_drops_and_elapsed():
    s = RunSummary(started=1.0)
    s.sources = {0: SourceStats(0, state="running", frames=30, dropped=2), 1: SourceStats(1, state="reconnecting"),
                 2: SourceStats(2, state="running", dropped=1)}
    text = progress_text(s)
    assert text.startswith("2/3 sources running (1 reconnecting) | 30 frames, ") and "| 3 dropped |" in text
    assert re.search(r"\| \d+:\d\d:\d\d$", text)


def test_cli_flags_before_or_after_the_command(tmp_path, capsys):
    from vidflow.cli import _parser

    a = _parser().parse_args(["--log-format", "json", "run", "p.yaml"])
    assert (a.log_format, a.log_level, a.verbose) == ("json", None, False)
    a = _parser().parse_args(["run", "p.yaml", "--log-level", "debug", "--log-format", "json", "-v"])
    assert (a.log_format, a.log_level, a.verbose) == ("json", "debug", True)
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "p.yaml", "--log-format", "xml"])


def test_config_error_as_a_json_line(tmp_path, capsys, logs):
    from vidflow.cli import main

    p = tmp_path / "p.yaml"
    p.write_text("sources: [{synthetic: {frames: 1}}]\nmuxer: {batch_size: eight}\n")
    assert main(["check", str(p), "--log-format", "json"]) == 2
    rec = json.loads(capsys.readouterr().err)
    assert rec["level"] == "error" and rec["path"] == "muxer.batch_size" and 'got "eight"' in rec["msg"]
