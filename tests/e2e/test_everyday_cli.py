"""A new user's rough edges: `--version`, `python -m vidflow`, `demo --device cuda` without CUDA,
`--set detect.conf=abc`, readable `info`, `--torch-threads`, a `call:` module that cannot be
found (the error says PYTHONPATH), the demo-model warning on real footage, and `bench` without
profiler noise on stderr."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidflow.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _py(*args: str, cwd: str | Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "vidflow", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def test_version_and_python_dash_m():
    r = _py("--version")
    assert r.returncode == 0 and r.stdout.startswith("vidflow ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_on_cuda_without_cuda_is_one_line(capsys):
    assert main(["demo", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "CUDA is not available" in err


def test_set_with_a_wrong_type_names_the_key_and_type(tmp_path, capsys):
    y = tmp_path / "p.yaml"
    y.write_text("sources: [{synthetic: {frames: 1}}]\nstages: [{detect: {model: demo}}]\nsinks: []\n")
    assert main(["check", str(y), "--set", "detect.conf=abc"]) == 2
    err = capsys.readouterr().err
    assert "stages[0].detect.conf" in err and "expected float" in err and "could not convert" not in err


def test_info_is_a_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("vidflow ") and "{" not in out and "device" in out


def test_torch_threads_flag_and_missing_user_module(tmp_path, capsys):
    y = tmp_path / "p.yaml"
    y.write_text("sources: [{synthetic: {width: 64, height: 48, frames: 2}}]\nstages: [{call: nomod:fn}]\nsinks: []\n")
    assert main(["run", str(y), "-q", "--allow-code", "nomod", "--torch-threads", "0"]) == 2
    assert "torch_threads: expected >= 1" in capsys.readouterr().err
    assert main(["run", str(y), "-q", "--allow-code", "nomod", "--torch-threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "No module named 'nomod'" in err and "PYTHONPATH" in err and str(tmp_path) in err


def test_demo_model_on_real_footage_warns(tmp_path, caplog):
    from vidflow.config import build_parts, load_config
    from vidflow.scenes import make_clip

    clip = make_clip(tmp_path / "cam.mp4", width=64, height=48, frames=2, fps=10, seed=1)
    y = tmp_path / "p.yaml"
    y.write_text(f"sources: [{{file: {clip.path}}}]\nstages: [{{detect: {{model: demo}}}}]\nsinks: []\n")
    with caplog.at_level(logging.WARNING, logger="vidflow"):
        build_parts(load_config(y))                              # a generated clip: no warning
    assert "only knows" not in caplog.text
    Path(clip.gt_path).unlink()                                  # now it is "a real file"
    with caplog.at_level(logging.WARNING, logger="vidflow"):
        build_parts(load_config(y))
    assert "model: demo only knows vidflow's generated shapes (box, disc, triangle)" in caplog.text
    assert "cam.mp4" in caplog.text and "yolo export" in caplog.text


def test_bench_prints_no_profiler_noise(tmp_path):
    r = _py("bench", "--device", "cpu", "--streams", "1", "--frames", "3", "--model", "demo", "--size", "160x120",
            "--skip", "B", "M", "D", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"bench": "E"' in r.stdout
    assert "profiler_start" not in r.stderr and "USDT" not in r.stderr
