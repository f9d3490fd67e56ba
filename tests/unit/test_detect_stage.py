"""The Detector stage with a tiny model made here, exported to ONNX and TorchScript (metadata
included): boxes land in source pixels through letterbox + the frame's region, labels and input
size come from the metadata, tensors are kept zero-copy, and the model runs through `vidflow run`."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.engines.fake import FakeEngine
from vidflow.stages.detect import Detector

NAMES = {0: "red", 1: "blue"}


class Tiny(torch.nn.Module):
    """[B,3,64,64] -> [B, 4+2, 2]: two fixed boxes (cx,cy,w,h input px); class scores = the max
    of the red / blue channel over the image."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("boxes", torch.tensor([[32.0, 10.0], [32.0, 10.0], [16.0, 8.0], [16.0, 8.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        s = x.flatten(2).amax(2)                                  # [B,3]
        scores = torch.stack([s[:, 0], s[:, 2]], 1)               # [B,2]
        return torch.cat([self.boxes.unsqueeze(0).expand(b, 4, 2),
                          scores.unsqueeze(2).expand(b, 2, 2)], 1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnx")
    import onnx

    d = tmp_path_factory.mktemp("tiny")
    m = Tiny().eval()
    ts = d / "tiny.torchscript"
    cfg = json.dumps({"names": {str(k): v for k, v in NAMES.items()}, "imgsz": [64, 64]})
    torch.jit.save(torch.jit.script(m), str(ts), _extra_files={"config.txt": cfg})
    on = d / "tiny.onnx"
    torch.onnx.export(m, (torch.rand(1, 3, 64, 64),), str(on), input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(on))
    for k, v in (("names", str(NAMES)), ("imgsz", "[64, 64]")):   # as Ultralytics writes them
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(proto, str(on))
    return {"onnx": str(on), "torchscript": str(ts)}


def _batch() -> Batch:
    """Two 128x96 batch images: frame 0 is a 256x192 source scaled into the whole image, frame 1
    a 64x48 source placed 1:1 at (32, 24) (region). Both are pure red (R=255) inside the region."""
    img = torch.zeros(2, 3, 96, 128, dtype=torch.uint8)
    img[0, 0] = 255
    img[1, 0, 24:72, 32:96] = 255
    frames = (FrameInfo(0, 0, 0.0, width=256, height=192, region=(0, 0, 128, 96)),
              FrameInfo(1, 0, 0.0, width=64, height=48, region=(32, 24, 96, 72)))
    return Batch(images=img, frames=frames)


def _expected() -> torch.Tensor:
    # 128x96 -> 64x64 letterbox: scale 0.5, new 64x48, top 8. anchor boxes in input px:
    # (24,24,40,40) and (6,6,14,14) -> image px (48,32,80,64) and (12,-4,28,12)
    img = torch.tensor([[48.0, 32.0, 80.0, 64.0], [12.0, -4.0, 28.0, 12.0]])
    f0 = (img * 2).clamp(min=0)                                       # region = whole image, x2 to source
    f1 = (img - torch.tensor([32.0, 24.0, 32.0, 24.0])).clamp(min=0)  # 1:1, offset by the region
    f1 = torch.minimum(f1, torch.tensor([64.0, 48.0, 64.0, 48.0]))
    return f0, f1


@pytest.mark.parametrize("kind", ["onnx", "onnx-torch", "torchscript", "module"])
def test_tiny_model_as_stage(exported, kind):
    model = {"onnx": exported["onnx"], "onnx-torch": exported["onnx"], "torchscript": exported["torchscript"],
             "module": Tiny()}[kind]
    det = Detector(model, conf=0.5, keep_input=True, keep_output=True,
                   labels=["red", "blue"] if kind == "module" else None,
                   size=(64, 64) if kind == "module" else None,
                   backend="torch" if kind == "onnx-torch" else "auto")
    batch = _batch()
    out = det(batch)
    assert det.input_size == (64, 64)
    assert out.labels["objects"] == ("red", "blue")
    f0, f1 = _expected()
    o = out.objects
    assert o.class_id.tolist() == [0, 0, 0]  # frame 1's second box lies outside its region: dropped
    assert o.frame_idx.tolist() == [0, 0, 1]
    assert torch.allclose(o.bbox[:2], f0, atol=1e-3), o.bbox
    assert torch.allclose(o.bbox[2], f1[0], atol=1e-3), o.bbox
    assert (o.object_id == -1).all()
    assert out.tensors["detect.input"].shape == (2, 3, 64, 64)
    assert out.tensors["detect.output0"].shape == (2, 6, 2)
    # the input batch is untouched
    assert len(batch.objects) == 0 and not batch.tensors and "objects" not in batch.labels


def test_metadata_read_from_files(exported):
    from vidflow.engines import load_engine

    for path in exported.values():
        eng = load_engine(path)
        assert eng.labels == ("red", "blue")
        assert eng.input_size == (64, 64)
        out = eng(torch.rand(3, 3, 64, 64))  # dynamic batch
        assert out["output0"].shape == (3, 6, 2)


def test_yaml_labels_override_metadata(exported):
    out = Detector(exported["onnx"], conf=0.5, labels=["a", "b"])(_batch())
    assert out.labels["objects"] == ("a", "b")


def test_tensors_kept_zero_copy_and_classes_filter():
    seen = {}

    def fn(x):
        b = x.shape[0]
        raw = torch.zeros(b, 6, 3)
        raw[:, :4, 0] = torch.tensor([20.0, 20.0, 10.0, 10.0])[None, :]
        raw[:, 4, 0] = 0.9
        raw[:, :4, 1] = torch.tensor([40.0, 40.0, 10.0, 10.0])[None, :]
        raw[:, 5, 1] = 0.8
        seen["x"], seen["raw"] = x, raw
        return {"output0": raw, "aux": raw[:, :1].clone()}

    eng = FakeEngine(fn=fn, input_size=(64, 64), labels=("p", "q"))
    det = Detector(eng, keep_input=True, keep_output=True, name="det2", classes=[1])
    img = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    out = det(Batch(images=img, frames=(FrameInfo(0, 0, 0.0, width=64, height=64),)))
    assert out.tensors["det2.input"] is seen["x"]
    assert out.tensors["det2.output0"] is seen["raw"]
    assert set(out.tensors) == {"det2.input", "det2.output0", "det2.aux"}
    assert out.objects.class_id.tolist() == [1]
    assert out.objects.bbox.tolist() == [[35.0, 35.0, 45.0, 45.0]]
    assert out.labels["objects"] == ("p", "q")


def test_replaces_existing_objects_and_bgr():
    got = {}

    def fn(x):
        got["x"] = x
        return {"output0": torch.zeros(x.shape[0], 5, 1)}

    img = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    img[0, 0] = 255  # red
    old = Objects.create(frame_idx=torch.tensor([0]), bbox=torch.tensor([[1.0, 1.0, 2.0, 2.0]]))
    b = Batch(images=img, frames=(FrameInfo(0, 0, 0.0, width=32, height=32),), objects=old)
    out = Detector(FakeEngine(fn=fn, input_size=(32, 32)), color="bgr")(b)
    assert len(out.objects) == 0 and len(b.objects) == 1
    assert got["x"][0, 2].mean() == 1.0 and got["x"][0, 0].mean() == 0.0  # channels swapped


def test_bad_arguments():
    with pytest.raises(ValueError, match="yolov8"), pytest.deprecated_call(match="head="):
        Detector("demo", format="yolox")
    with pytest.raises(ValueError, match="rgb"):
        Detector("demo", color="hsv")
    with pytest.raises(ValueError, match="not found"):
        Detector("/nonexistent/model.onnx")
    with pytest.raises(ValueError, match="conf"):
        Detector("demo", conf=1.5)
    with pytest.raises(ValueError, match="size"):
        Detector("demo", size=[640])


def test_demo_model_loads_by_default():
    det = Detector()
    img = torch.zeros(1, 3, 240, 320, dtype=torch.uint8)
    out = det(Batch(images=img, frames=(FrameInfo(0, 0, 0.0, width=320, height=240),)))
    assert out.labels["objects"] == ("box", "disc", "triangle")
    assert det.input_size == (320, 320) and det.active_head.format == "yolov8"


def test_runs_through_vidflow_run(exported, tmp_path):
    pytest.importorskip("vidflow.cli")
    from vidflow.cli import main

    out = tmp_path / "frames.jsonl"
    cfg = tmp_path / "p.yaml"
    cfg.write_text(textwrap.dedent(f"""
        device: cpu
        sources:
          - synthetic: {{width: 128, height: 96, frames: 4, seed: 1}}
        muxer: {{batch_size: 2, max_wait_ms: 30}}
        stages:
          - detect: {{model: {exported['onnx']}, conf: 0.5}}
        sinks:
          - jsonl: {out}
    """))
    assert main(["run", str(cfg), "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_num"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        labels = [o["label"] for o in r["objects"]]
        assert labels and set(labels) <= {"red", "blue"}
        for o in r["objects"]:
            x1, y1, x2, y2 = o["bbox"]
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96
