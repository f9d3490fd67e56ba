"""`vidflow run`'s failures, as an operator reads them: a failed source's error is printed once
(the log line when it failed; the summary names it), the exit code says what happened."""

from __future__ import annotations

import pytest

from vidflow.cli import main


@pytest.fixture
def junk(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(bytes(range(256)) * 20)          # not a video
    return p


def test_source_error_printed_once_others_complete(tmp_path, junk, capsys):
    out = tmp_path / "o.jsonl"
    y = tmp_path / "p.yaml"
    y.write_text(f"device: cpu\nsources:\n  - file: {junk}\n  - synthetic: {{width: 64, height: 48, frames: 7}}\n"
                 f"sinks: [{{jsonl: {out}}}]\n")
    assert main(["run", str(y), "-q"]) == 1
    cap = capsys.readouterr()
    assert cap.err.count("Invalid data") == 1 and "run failed: source 0 failed" in cap.err
    rows = {line.split()[0]: line.split() for line in cap.out.splitlines() if line.strip()}
    assert rows["0"][1] == "failed" and "Invalid data" in cap.out          # the summary: current state
    assert rows["1"][1] == "ended" and rows["1"][2] == "7" and len(out.read_text().splitlines()) == 7
    assert rows["jsonl"][1] == "closed"


def test_clean_run_exit_0_with_sink_states(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    y = tmp_path / "p.yaml"
    y.write_text(f"device: cpu\nsources: [{{synthetic: {{width: 64, height: 48, frames: 5}}}}]\nsinks: [{{jsonl: {out}}}]\n")
    assert main(["run", str(y), "--log-level", "warning"]) == 0
    cap = capsys.readouterr()
    assert "total: 5 frames" in cap.out and "(interrupted)" not in cap.out
    assert cap.err == ""                            # warning level: a clean run says nothing on stderr
