"""``vidflow demo --task ... --model ...`` on the CPU: the semantic demo runs with vidflow's own
semantic model, segment / pose without --model stop with the model file to pass, a missing
--model file is named, and (where ../shared/models has it) the segment demo finds the objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidflow.cli import main

SEG = Path("/work/shared/models/yolo11n_shapes_seg.onnx")


def _args(out: Path, *more: str) -> list[str]:
    return ["demo", "--device", "cpu", "--streams", "1", "--frames", "4", "--out", str(out), *more]


@pytest.mark.parametrize("task, needs", [("segment", "segmentation model"), ("pose", "pose model")])
def test_segment_and_pose_need_a_model(tmp_path, capsys, task, needs):
    assert main(_args(tmp_path, "--task", task)) == 2
    err = capsys.readouterr().err
    assert f"--task {task} needs" in err and "--model PATH" in err and needs in err
    assert f"yolo11n-{'seg' if task == 'segment' else 'pose'}.onnx" in err
    assert not (tmp_path / "clips").exists()          # stopped before making anything


def test_missing_model_file_is_named(tmp_path, capsys):
    assert main(_args(tmp_path, "--model", str(tmp_path / "nope.onnx"))) == 2
    assert "--model: file not found" in capsys.readouterr().err


def test_unknown_task_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(_args(tmp_path, "--task", "depth"))
    assert ei.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_semantic_demo_runs(tmp_path, capsys):
    assert main(_args(tmp_path, "--task", "semantic")) == 0
    recs = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["objects"] == [] for r in recs)   # a class map, no objects
    assert (tmp_path / "annotated.mp4").stat().st_size > 0


@pytest.mark.skipif(not SEG.is_file(), reason="the YOLO11n-seg export of ../shared/models is not here (not in CI)")
def test_segment_demo_with_a_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(_args(tmp_path, "--task", "segment", "--model", str(SEG))) == 0
    recs = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and sum(len(r["objects"]) for r in recs) >= 4
    table = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(table) if line.split()[:1] == ["source"])
    recall = float(table[head + 1].split()[-2])
    assert recall > 0.8, table
