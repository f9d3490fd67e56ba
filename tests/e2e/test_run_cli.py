"""`vidflow run` end to end on generated clips: every frame of every source reaches the JSONL."""

import json
import re
import subprocess
import sys
import textwrap

import av
import pytest

from vidflow.cli import main
from vidflow.scenes import make_clip

CLIPS = [  # (name, width, height, frames, bframes)
    ("hd.mp4", 1920, 1080, 12, True),
    ("mid.mkv", 1280, 720, 21, False),
    ("vga.mp4", 640, 480, 33, True),
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    out = []
    for i, (name, w, h, n, bf) in enumerate(CLIPS):
        out.append(make_clip(d / name, width=w, height=h, frames=n, fps=25, seed=i, bframes=bf))
    return out


def container_pts(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def test_vidflow_run_writes_every_frame(tmp_path, clips, capsys):
    out = tmp_path / "out" / "frames.jsonl"
    yaml_text = "device: cpu\nsources:\n" + "".join(f"  - file: {c.path}\n" for c in clips) + textwrap.dedent(f"""
        muxer: {{batch_size: 4, max_wait_ms: 20, size: [640, 360]}}
        sinks:
          - jsonl: {out}
        """)
    p = tmp_path / "p.yaml"
    p.write_text(yaml_text)
    assert main(["run", str(p), "-q"]) == 0
    summary = capsys.readouterr().out
    assert "total: 66 frames" in summary
    if sys.platform == "linux":               # the time before run() (/proc), and to the first batch
        assert re.search(r"process: run\(\) [0-9.]+ s after the process started .*first batch [0-9.]+ s after it",
                         summary), summary
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    for sid, c in enumerate(clips):
        mine = [r for r in recs if r["source_id"] == sid]
        assert [r["frame_num"] for r in mine] == list(range(c.frames))
        assert (mine[0]["width"], mine[0]["height"]) == (c.width, c.height)
        pts = [r["pts"] for r in mine]
        assert pts == pytest.approx(container_pts(c.path), abs=1e-6)
        assert all(b > a for a, b in zip(pts, pts[1:]))


def test_vidflow_run_config_error_exit_code(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("sources: [{file: {path: x.mp4, lop: true}}]\n")
    r = subprocess.run([sys.executable, "-m", "vidflow.cli", "run", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "sources[0].file.lop" in r.stderr and "allowed: path" in r.stderr


def test_vidflow_run_set_override(tmp_path, clips):
    out = tmp_path / "o.jsonl"
    p = tmp_path / "p.yaml"
    p.write_text(f"device: cpu\nsources:\n  - file: {clips[2].path}\nmuxer: {{batch_size: 2}}\nsinks:\n  - jsonl: {out}\n")
    assert main(["run", str(p), "-q", "--set", "muxer.batch_size=8", "--set", "muxer.size=[320, 240]"]) == 0
    assert len(out.read_text().splitlines()) == clips[2].frames


def test_vidflow_info_runs(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["torch"] and "cuda_available" in facts and "nvdec" in facts
