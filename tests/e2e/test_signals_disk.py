"""A full disk under a real `vidflow run` (a small tmpfs; skipped where mounting one is not
allowed, the injected-ENOSPC unit tests cover the writers): the sink on it is marked failed with
its error, the other sink and the pipeline go on (``on_error: isolate``, the default) or the run
stops (``on_error: stop``); neither leaves a partial record; the warning comes at start."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.test_signals import Run, mp4_frames, per_source, reap_runs, records, summary_rows  # noqa: F401 - reap_runs: autouse


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def _yaml(tmp_path, disk, policy=""):
    p = tmp_path / "p.yaml"
    p.write_text(f"""device: cpu
sources:
  - synthetic: {{width: 160, height: 120, frames: 150}}
  - synthetic: {{width: 160, height: 120, frames: 150, seed: 1}}
muxer: {{batch_size: 4, max_wait_ms: 20}}
sinks:
  - jsonl: {tmp_path}/frames.jsonl
  - video: {{path: {disk}/video, tiled: false, keyframe_s: 0.5{policy}}}
""")
    return p


def test_full_disk_isolated_other_sink_and_pipeline_go_on(tmp_path, small_disk):
    run = Run(_yaml(tmp_path, small_disk))
    assert run.wait() == 1, run.stderr
    assert "free on the disk of" in run.stderr                  # warned at start (64 kB < 1 GiB)
    assert run.stderr.count("No space left") == 1               # the error once in the log...
    rows = summary_rows(run.stdout)
    assert rows["video"][1] == "failed" and "No space left" in run.stdout   # ...and in the summary
    assert rows["jsonl"][1] == "closed" and rows["0"][1] == rows["1"][1] == "ended"
    got = per_source(records(tmp_path / "frames.jsonl"))        # the other sink has every frame
    assert got == {0: list(range(150)), 1: list(range(150))}
    for sid in (0, 1):                                          # cut back to whole fragments
        path = small_disk / "video" / f"{sid}.mp4"
        if path.exists() and path.stat().st_size:
            assert mp4_frames(path) < 150


def test_full_disk_stop_policy_ends_the_run(tmp_path, small_disk):
    run = Run(_yaml(tmp_path, small_disk, ", on_error: stop"))
    assert run.wait() == 1, run.stderr
    assert "stopping" in run.stderr and "No space left" in run.stderr
    got = per_source(records(tmp_path / "frames.jsonl"))        # complete lines, the run cut short
    assert sum(len(v) for v in got.values()) < 300
    assert summary_rows(run.stdout)["video"][1] == "failed"
