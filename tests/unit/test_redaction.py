"""A password in a camera URI never shows: not in the source's fields, state or stats, not in
errors (message, repr, chained traceback), logs, the run summary, JSONL, config errors or the CLI.

A refused connection on a free local port stands in for a camera, so this runs offline.
"""

from __future__ import annotations

import json
import logging
import socket
import traceback

import pytest

from vidflow.cli import main
from vidflow.config import build_parts
from vidflow.errors import ConfigError, SourceError, StreamUnavailable, redact_uri
from vidflow.mux import Muxer
from vidflow.pipeline import Pipeline
from vidflow.sinks.jsonl import JsonlSink
from vidflow.sources.uri import RtspSource, UriSource
from vidflow.testing import FakeSource

SECRET = "s3cr3t-Pa55"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def url() -> str:
    return f"rtsp://admin:{SECRET}@127.0.0.1:{_free_port()}/stream1"


def _everything(err: BaseException) -> str:
    return "".join(traceback.format_exception(err)) + repr(err) + repr(err.args) + str(getattr(err, "uri", ""))


@pytest.mark.parametrize("text", [
    f"rtsp://admin:{SECRET}@10.0.0.7:554/s1",
    f"http://viewer:{SECRET}@cam.local/video.mjpg",
    f"could not open 'rtsps://u:{SECRET}@cam/x': refused",
    f"srt://me:{SECRET}@host:9000?mode=caller",
])
def test_redact_uri(text):
    out = redact_uri(text)
    assert SECRET not in out and "***" in out


def test_source_fields_hide_the_password(url):
    for src in (RtspSource(url), UriSource(url)):
        assert SECRET not in src.uri and "admin:***@" in src.uri
        assert SECRET not in repr(src) and SECRET not in str(src.stats())


def test_constructor_errors_hide_the_password(url):
    with pytest.raises(ValueError) as ei:
        RtspSource(url.replace("rtsp://", "http://"))
    assert SECRET not in str(ei.value) and "admin:***@" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        UriSource(url, transport="quic")
    assert SECRET not in str(ei.value) and "tcp" in str(ei.value)


def test_failure_error_state_and_logs_hide_the_password(url, caplog):
    src = RtspSource(url, backoff=(0.01, 0.02), max_retries=2)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StreamUnavailable) as ei:
            list(src.frames(device="cpu", source_id="cam"))
    err = ei.value
    assert "Connection refused" in str(err) and err.source_id == "cam"
    assert SECRET not in _everything(err)
    assert err.__cause__ is None and err.__suppress_context__      # no chained PyAV error with the URL
    assert SECRET not in str(src.stats()) and src.state == "failed"
    assert "retrying" in caplog.text and SECRET not in caplog.text


def test_pipeline_summary_jsonl_and_error_hide_the_password(url, tmp_path, caplog):
    out = tmp_path / "frames.jsonl"
    cam = RtspSource(url, backoff=(0.01, 0.02), max_retries=1)
    p = Pipeline([FakeSource(5), cam], muxer=Muxer(batch_size=2, max_wait_ms=5), sinks=[JsonlSink(str(out))],
                 device="cpu")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(SourceError) as ei:
            p.run()
    assert ei.value.source_id == 1 and SECRET not in _everything(ei.value)
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(x)["source_id"] == 0 for x in lines)
    assert SECRET not in out.read_text()
    assert SECRET not in p.summary.table() and SECRET not in p.summary.progress_line()
    assert SECRET not in repr(p.summary) and "admin:***@" in p.summary.table()
    assert SECRET not in caplog.text


def test_config_errors_hide_the_password(url):
    cfg = {"device": "cpu", "sources": [{"rtsp": {"url": url, "transport": "quic"}}]}
    with pytest.raises(ConfigError) as ei:
        build_parts(cfg)
    assert "transport" in str(ei.value) and SECRET not in _everything(ei.value)


def test_cli_output_hides_the_password(url, tmp_path, capsys, caplog):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"""device: cpu
sources:
  - rtsp: {{url: "{url}", backoff: [0.01, 0.02], max_retries: 1}}
sinks:
  - jsonl: {tmp_path / 'out.jsonl'}
""")
    with caplog.at_level(logging.DEBUG):
        try:
            code = main(["run", str(cfg)])
        except SystemExit as e:
            code = e.code
        except SourceError as e:
            code = 1
            assert SECRET not in _everything(e)
    cap = capsys.readouterr()
    assert code not in (0, None)
    assert "refused" in (cap.out + cap.err + caplog.text).lower()
    assert SECRET not in cap.out + cap.err + caplog.text
