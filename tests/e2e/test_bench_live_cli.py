"""``vidflow bench --live`` end to end on the CPU, as the GPU session will run it: cameras in their
own process, the pipeline, one JSON line with the issue's figures; a kill; ``--max-cameras``.
Values are checked for sanity only (no timing thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
TINY = ["--size", "240p", "--fps", "15", "--decoder", "ffmpeg", "--stages", "none", "--device", "cpu",
        "--clip-seconds", "4", "--bitrate", "300000", "--warmup", "0.5"]


def _bench(tmp_path: Path, *args: str, rc: int = 0) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "vidflow", "bench", "--live", *TINY, "--workdir", str(tmp_path),
                          *args], capture_output=True, text=True, timeout=300, env=env)
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert out.returncode == rc, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    return lines


def test_live_bench_prints_the_figures(tmp_path):
    (rec,) = _bench(tmp_path, "--streams", "2", "--seconds", "2")
    assert "error" not in rec, rec
    for k in ("host_cpu", "host_cores", "host_cpu_mhz", "device"):
        assert rec[k], k
    assert rec["bench"] == "live" and rec["streams"] == 2 and rec["codec"] == "h264" and rec["size"] == "426x240"
    assert rec["backends"] == ["ffmpeg"] and rec["offered_fps"] == 15
    assert rec["delivered_fps_min"] > 0 and rec["delivered_fps_median"] >= rec["delivered_fps_min"]
    assert rec["served_fps_min"] > 0 and rec["measured_s"] > 0 and rec["startup_s"] >= 0
    assert rec["latency_p50_ms"] > 0 and rec["latency_p95_ms"] >= rec["latency_p50_ms"]
    assert rec["latency_samples"] > 0 and rec["unreadable_frames"] == 0
    assert 0 <= rec["decoded_to_result_ms_p50"] <= rec["latency_p50_ms"]    # decoded after it was sent
    assert rec["cpu_cores"] > 0 and rec["cpu_cores_per_stream"] > 0 and rec["server_cpu_cores"] >= 0
    assert rec["kills"] == 0 and rec["frames_lost_per_reconnect"] is None


@pytest.mark.parametrize("codec", ["hevc"])
def test_live_bench_kills_a_camera_and_steps_up_cameras(tmp_path, codec):
    (rec,) = _bench(tmp_path, "--streams", "2", "--seconds", "4", "--kill-every", "2", "--kill-down", "0.2",
                    "--codec", codec, "--procs", "1")
    assert "error" not in rec, rec
    assert rec["codec"] == "hevc" and rec["procs"] == 1 and rec["processes_measured"] >= 2
    assert rec["kills"] == 1 and rec["kill_streams"] == 1 and rec["recovered"] in (0, 1)
    assert rec["others_delivered_fps_min"] > 0 and rec["frames_lost_per_reconnect"] is not None
    lines = _bench(tmp_path, "--streams", "1", "--max-cameras", "--step", "1", "--max-streams", "2", "--seconds", "1",
                   "--threshold", "0.0")
    runs, (top,) = lines[:-1], lines[-1:]
    assert [r["streams"] for r in runs] == [1, 2] and all("error" not in r for r in runs)
    assert top["bench"] == "live-max" and top["max_cameras"] == 2 and [t[0] for t in top["trials"]] == [1, 2]
    # a first count that already falls behind: down by --step (here nothing holds: no count passes 2x offered)
    lines = _bench(tmp_path, "--streams", "2", "--max-cameras", "--step", "1", "--seconds", "1", "--threshold", "2.0",
                   rc=1)
    top = lines[-1]
    assert top["max_cameras"] is None and top["first_failing"] == 1 and [t[0] for t in top["trials"]] == [2, 1]
