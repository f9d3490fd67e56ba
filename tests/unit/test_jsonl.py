import json

import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.sinks.jsonl import JsonlSink


def test_jsonl_schema_and_attrs(tmp_path):
    img = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    frames = (FrameInfo(0, 3, 0.1, 5, 1920, 1080), FrameInfo(1, 0, 0.0, 5, 640, 480))
    objs = Objects.create(frame_idx=torch.tensor([1, 0, 1]), bbox=torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8],
                          [9, 10, 11, 12.126]]), confidence=torch.tensor([0.5, 0.25, 1.0]),
                          class_id=torch.tensor([2, 0, 1]), object_id=torch.tensor([7, -1, 8]),
                          attrs={"color.label": torch.tensor([1, 0, 1]), "embed.vector": torch.ones(3, 2),
                                 "track.bbox": torch.zeros(3, 4)})
    b = Batch(images=img, frames=frames, objects=objs,
              labels={"objects": ("box", "disc", "triangle"), "color": ("red", "blue")})
    path = tmp_path / "a" / "b" / "out.jsonl"
    with JsonlSink(path) as sink:
        sink.write(b)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["source_id"], r["frame_num"]) for r in recs] == [(0, 3), (1, 0)]
    assert recs[0]["width"] == 1920 and recs[0]["pts"] == 0.1
    assert recs[0]["objects"] == [{"bbox": [5.0, 6.0, 7.0, 8.0], "class_id": 0, "label": "box", "confidence": 0.25,
                                   "object_id": -1, "attrs": {"color.label": "red", "embed.vector": [1.0, 1.0]}}]
    o = recs[1]["objects"]
    assert [x["object_id"] for x in o] == [7, 8] and o[1]["bbox"][3] == 12.13 and o[0]["label"] == "triangle"


def test_jsonl_empty_run_leaves_file(tmp_path):
    s = JsonlSink(tmp_path / "x" / "e.jsonl")
    s.close()
    assert (tmp_path / "x" / "e.jsonl").read_text() == ""
