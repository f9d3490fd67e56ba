"""Signals to a real `vidflow run` process (issue 21): SIGTERM / SIGINT stop it cleanly (every output
closed and complete, summary printed, exit 143 / 130), a second signal or the stop timeout stops
it at once (outputs still closed), a stuck sink cannot keep it alive, and SIGKILL leaves every
output readable (JSONL ends on a complete line, the fragmented MP4 decodes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest

from vidflow.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
SINKS = "tests.e2e._faultsinks"


def write_yaml(tmp: Path, extra_sinks: str = "", frames: str = "null") -> Path:
    p = tmp / "p.yaml"
    p.write_text(f"""device: cpu
sources:
  - synthetic: {{width: 160, height: 120, frames: {frames}}}
  - synthetic: {{width: 160, height: 120, frames: {frames}, seed: 1}}
muxer: {{batch_size: 4, max_wait_ms: 20}}
sinks:
  - jsonl: {tmp}/out/frames.jsonl
  - video: {{path: {tmp}/out/video, tiled: false, keyframe_s: 0.5}}
{extra_sinks}""")
    return p


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies (a killed test run leaves no looping child)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


class Run:
    """``python -m vidflow.cli run`` as a child; stdout and stderr collected as they come."""

    live: list[Run] = []       # started and not yet reaped (``reap_runs`` ends them after each test)

    def __init__(self, yaml_path: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.proc = subprocess.Popen([sys.executable, "-m", "vidflow.cli", "run", str(yaml_path), *args], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=_die_with_parent)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()
        Run.live.append(self)

    @staticmethod
    def _read(stream, dest: list[str]) -> None:
        for line in stream:
            dest.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._reap()
        return rc

    def _reap(self) -> None:
        """Kill the child if it still runs, collect it, let the readers finish, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for t in self._readers:
            t.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        if self in Run.live:
            Run.live.remove(self)


@pytest.fixture(autouse=True)
def reap_runs():
    """After each test: no child left running, no pipe left open (also when the test failed early)."""
    yield
    while Run.live:
        Run.live[0]._reap()


def records(path: Path) -> list[dict]:
    """Every line of a JSONL file; the file must end on a complete line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"partial last line: {data[-60:]!r}"
    return [json.loads(x) for x in data.splitlines()]


def jsonl_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def mp4_frames(path: Path) -> int:
    """Frames PyAV decodes from the file (raises on a damaged one)."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by first column (source ids, then sink names)."""
    rows = {}
    for line in stdout.splitlines():
        cols = line.split()
        if cols and cols[0] not in ("source", "sink", "total:"):
            rows[cols[0]] = cols
    return rows


def per_source(recs: list[dict]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r in recs:
        out.setdefault(r["source_id"], []).append(r["frame_num"])
    return out


def check_outputs_complete(tmp: Path, stdout: str, *, exact: bool = True) -> dict[int, int]:
    """JSONL complete and gap-free per source; each source's MP4 decodes and holds exactly its
    JSONL frames (``exact=False``, a stop that dropped queued batches: at most those, if any); the summary
    counts the same as the JSONL, or more where the JSONL sink counts dropped batches. Returns frames
    per source."""
    recs = records(tmp / "out" / "frames.jsonl")
    got = per_source(recs)
    assert sorted(got) == [0, 1]
    rows = summary_rows(stdout)
    for sid, nums in got.items():
        assert nums == list(range(len(nums))), f"source {sid}: frames missing in the JSONL"
        mp4 = tmp / "out" / "video" / f"{sid}.mp4"
        if exact:
            assert mp4_frames(mp4) == len(nums)
        elif mp4.exists():        # (a source whose first batches were all dropped has no file)
            assert mp4_frames(mp4) <= len(nums)
        frames = int(rows[str(sid)][2])                      # the summary's frames column
        if exact or rows["jsonl"][3] == "0":
            assert frames == len(nums)
        else:             # a stop-now dropped queued JSONL batches: counted there, not lost silently
            assert len(nums) < frames
    return {sid: len(n) for sid, n in got.items()}


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly(tmp_path, sig, code):
    run = Run(write_yaml(tmp_path))
    wait_until(lambda: jsonl_lines(tmp_path / "out" / "frames.jsonl") >= 80, 180, "frames in the JSONL")
    run.send(sig)
    assert run.wait() == code, run.stderr
    assert "(interrupted)" in run.stdout
    assert f"signal={signal.Signals(sig).name}" in run.stderr and "stopping:" in run.stderr
    counts = check_outputs_complete(tmp_path, run.stdout)
    assert sum(counts.values()) >= 80
    rows = summary_rows(run.stdout)
    assert rows["0"][1] == rows["1"][1] == "stopped"
    assert rows["jsonl"][1] == rows["video"][1] == "closed"


def test_second_signal_stops_now_outputs_still_closed(tmp_path):
    p = write_yaml(tmp_path, f"  - '{SINKS}:SlowSink': {{delay: 0.5, queue_size: 64}}\n")
    run = Run(p, "--allow-code", SINKS, "--stop-timeout", "300")
    wait_until(lambda: jsonl_lines(tmp_path / "out" / "frames.jsonl") >= 80, 180, "frames in the JSONL")
    run.send(signal.SIGTERM)
    wait_until(lambda: "stopping:" in run.stderr, 60, "the graceful stop to begin")
    run.send(signal.SIGTERM)
    assert run.wait() == 143, run.stderr
    assert "stopping now" in run.stderr and 'reason="second signal"' in run.stderr
    check_outputs_complete(tmp_path, run.stdout, exact=False)
    slow = summary_rows(run.stdout)["slow"]
    assert slow[1] == "closed" and int(slow[3]) > 0            # its backlog was dropped, and counted


def test_stop_timeout_turns_into_stop_now(tmp_path):
    p = write_yaml(tmp_path, f"  - '{SINKS}:SlowSink': {{delay: 0.5, queue_size: 64}}\n")
    run = Run(p, "--allow-code", SINKS, "--stop-timeout", "0.5")
    wait_until(lambda: jsonl_lines(tmp_path / "out" / "frames.jsonl") >= 80, 180, "frames in the JSONL")
    run.send(signal.SIGTERM)
    assert run.wait() == 143, run.stderr
    assert 'reason="stop_timeout passed"' in run.stderr
    check_outputs_complete(tmp_path, run.stdout, exact=False)


def test_stuck_sink_cannot_keep_the_process_alive(tmp_path):
    """A sink whose write never returns: after the stop timeout and the grace period the process
    leaves anyway, printing the summary; the other outputs were closed before it."""
    p = write_yaml(tmp_path, f"  - '{SINKS}:SlowSink': {{hang: true, queue_size: 2}}\n")
    run = Run(p, "--allow-code", SINKS, "--stop-timeout", "0.5")
    wait_until(lambda: jsonl_lines(tmp_path / "out" / "frames.jsonl") >= 8, 180, "frames in the JSONL")
    run.send(signal.SIGTERM)
    assert run.wait() == 143, run.stderr
    assert "exiting without waiting" in run.stderr and "total:" in run.stdout
    check_outputs_complete(tmp_path, run.stdout, exact=False)


def test_sigkill_leaves_readable_outputs(tmp_path):
    run = Run(write_yaml(tmp_path))
    wait_until(lambda: jsonl_lines(tmp_path / "out" / "frames.jsonl") >= 200, 180, "frames in the JSONL")
    run.send(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    got = per_source(records(tmp_path / "out" / "frames.jsonl"))    # every line complete
    for sid, nums in got.items():
        assert nums == list(range(len(nums)))
        n = mp4_frames(tmp_path / "out" / "video" / f"{sid}.mp4")     # never finalised, still decodes
        assert 0 < n <= len(nums)


def test_log_lines_are_json_with_a_timestamp(tmp_path):
    run = Run(write_yaml(tmp_path, frames="6"), "--log-format", "json", "--log-level", "debug")
    assert run.wait() == 0, run.stderr
    lines = [json.loads(x) for x in run.err]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
    started = next(x for x in lines if x["msg"] == "run started")
    assert started["sources"] == 2 and started["pipeline"].endswith("p.yaml")
    assert next(x for x in lines if x["msg"] == "run finished")["exit_code"] == 0
