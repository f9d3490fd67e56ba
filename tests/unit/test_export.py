"""Models in one line: export_module (TorchScript / ONNX with metadata), the torchvision wrapper,
metadata read from Ultralytics exports, pickles refused, `vidflow export` and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vidflow.batch import Batch, FrameInfo
from vidflow.cli import main as cli
from vidflow.export import Detections, describe, export_module, read_metadata, write_metadata
from vidflow.stages.detect import Detector

SHARED = Path("/work/shared/models")


class Yolo(nn.Module):
    """A 'yolov8' layout model: one box per input image at its centre, class 1 scores 0.9."""

    def forward(self, x):
        b, _, h, w = x.shape
        out = torch.zeros(b, 4 + 3, 2)
        out[:, 0, :] = w / 2
        out[:, 1, :] = h / 2
        out[:, 2, :] = w / 4
        out[:, 3, :] = h / 4
        out[:, 5, 0] = 0.9 + x[:, 0, 0, 0] * 0   # depends on the input: a real trace
        return out


class FakeTorchvision(nn.Module):
    """Stands in for a torchvision detection model: list of [3,H,W] in, list of dicts out (its own
    post-processing: a variable number of detections per image)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = []
        for i, img in enumerate(images):
            n = 1 + i
            boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]]).repeat(n, 1) + img.mean() * 0
            out.append({"boxes": boxes, "scores": torch.full((n,), 0.8), "labels": torch.full((n,), 2, dtype=torch.int64)})
        return out


def _batch(w=64, h=48, b=1):
    return Batch(images=torch.full((b, 3, h, w), 100, dtype=torch.uint8),
                 frames=tuple(FrameInfo(0, i, 0.0, width=w, height=h) for i in range(b)))


@pytest.mark.parametrize("suffix", [".torchscript", ".onnx"])
def test_export_module_writes_metadata_vidflow_reads(tmp_path, suffix):
    if suffix == ".onnx":
        pytest.importorskip("onnxruntime")
    p = export_module(Yolo(), (1, 3, 48, 64), tmp_path / f"m{suffix}", names=["cat", "dog", "bird"])
    m = read_metadata(p)
    assert m["labels"] == ("cat", "dog", "bird") and m["input_size"] == (64, 48)
    assert m["task"] == "detect" and m["head"] == "yolov8"
    det = Detector(str(p), conf=0.5)
    out = det(_batch())
    assert out.objects.class_id.tolist() == [1] and out.labels["objects"] == ("cat", "dog", "bird")
    assert out.objects.bbox[0].tolist() == pytest.approx([24.0, 18.0, 40.0, 30.0], abs=0.5)


def test_torchvision_style_model_scripted_with_its_post_processing(tmp_path):
    p = export_module(Detections(FakeTorchvision(), max_det=5), (2, 3, 96, 128), tmp_path / "tv.torchscript",
                      names=["__background__", "person", "car"], head="end2end", script=True)
    m = read_metadata(p)
    assert m["head"] == "end2end" and m["labels"][2] == "car"
    det = Detector(str(p), letterbox=False, conf=0.5)
    out = det(_batch(128, 96, b=2))
    assert out.objects.frame_idx.tolist() == [0, 1, 1]       # 1 and 2 detections, padding dropped
    assert set(out.objects.class_id.tolist()) == {2}
    assert out.objects.bbox[0].tolist() == pytest.approx([10.0, 20.0, 50.0, 80.0], abs=0.5)


@pytest.mark.skipif(not (SHARED / "yolo11n_shapes.onnx").exists(), reason="shared Ultralytics exports absent")
@pytest.mark.parametrize("name,task,head", [("yolo11n_shapes.onnx", "detect", "yolov8"),
                                            ("yolo11n_shapes_seg.torchscript", "segment", "segment"),
                                            ("yolo11n_shapes_pose.onnx", "pose", "pose")])
def test_ultralytics_exports_are_read_automatically(name, task, head):
    pytest.importorskip("onnxruntime")
    m = read_metadata(SHARED / name)
    assert m["labels"] == ("box", "disc", "triangle") and m["input_size"] == (640, 640)
    assert m["task"] == task and m["head"] == head
    assert "use it: - detect: {model:" in describe(SHARED / name)


def test_write_metadata_into_a_copy(tmp_path):
    src = export_module(Yolo(), (1, 3, 32, 32), tmp_path / "a.torchscript")
    dst = write_metadata(src, tmp_path / "b.torchscript", names=["x", "y", "z"], size=(320, 320))
    assert read_metadata(dst)["labels"] == ("x", "y", "z") and read_metadata(dst)["input_size"] == (320, 320)
    assert read_metadata(src)["labels"] is None


def test_cli_export_module_spec_pickle_and_missing(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynet.py").write_text("from torch import nn\nimport torch\n"
                                       "class Net(nn.Module):\n"
                                       "    def forward(self, x):\n"
                                       "        return torch.zeros(x.shape[0], 7, 3) + x.mean()\n"
                                       "def build():\n    return Net()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli(["export", "mynet:build", "-o", "net.torchscript", "--size", "96x64", "--names", "a,b,c"]) == 0
    out = capsys.readouterr().out
    assert "3 classes (a, b, c)" in out and "input  96x64" in out and "- detect: {model: net.torchscript}" in out
    torch.save(nn.Linear(2, 2), tmp_path / "ckpt.pt")
    assert cli(["export", "ckpt.pt"]) == 2
    err = capsys.readouterr().err
    assert "never unpickles" in err and "yolo export model=ckpt.pt format=onnx" in err
    assert cli(["export", "missing.onnx"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["export", "mynet:build"]) == 2      # a module needs -o
    assert "-o FILE" in capsys.readouterr().err
