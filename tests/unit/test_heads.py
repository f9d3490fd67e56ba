"""YOLO heads decode hand-made outputs exactly."""

from __future__ import annotations

import pytest
import torch

from vidflow.heads.yolo import decode, xywh_to_xyxy


def v8(rows: list[tuple[float, float, float, float, float, float]]) -> torch.Tensor:
    """One frame, anchors given as (cx, cy, w, h, score class 0, score class 1) -> [1, 6, N]."""
    return torch.tensor(rows, dtype=torch.float32).t().unsqueeze(0)


ROWS = [
    (50, 50, 20, 10, 0.90, 0.00),   # A class 0
    (51, 50, 20, 10, 0.80, 0.10),   # overlaps A (IoU 0.9), class 0 -> suppressed
    (50, 50, 20, 10, 0.20, 0.70),   # same place as A but class 1 -> kept (class-aware)
    (200, 100, 40, 40, 0.30, 0.05),  # B class 0
    (10, 10, 4, 4, 0.10, 0.20),     # below conf 0.25
]


def test_yolov8_exact():
    d = decode(v8(ROWS), format="yolov8", conf=0.25, iou=0.7)
    assert d.frame_idx.tolist() == [0, 0, 0]
    assert d.class_id.tolist() == [0, 1, 0]
    assert d.confidence.tolist() == pytest.approx([0.9, 0.7, 0.3])
    assert d.bbox.tolist() == [[40, 45, 60, 55], [40, 45, 60, 55], [180, 80, 220, 120]]


def test_agnostic_per_class_conf_max_det_and_classes():
    d = decode(v8(ROWS), format="yolov8", conf=0.25, iou=0.7, agnostic=True)
    assert d.class_id.tolist() == [0, 0] and d.confidence.tolist() == pytest.approx([0.9, 0.3])
    d = decode(v8(ROWS), format="yolov8", conf=[0.95, 0.5])   # class 0 needs > 0.95
    assert d.class_id.tolist() == [1] and d.confidence.tolist() == pytest.approx([0.7])
    d = decode(v8(ROWS), format="yolov8", max_det=2)
    assert d.confidence.tolist() == pytest.approx([0.9, 0.7])
    d = decode(v8(ROWS), format="yolov8", classes=[0])
    assert d.class_id.tolist() == [0, 0]
    with pytest.raises(ValueError, match="per-class"):
        decode(v8(ROWS), conf=[0.1, 0.2, 0.3])


def test_threshold_is_strictly_greater():
    d = decode(v8([(5, 5, 2, 2, 0.5, 0.0)]), conf=0.5)
    assert len(d.frame_idx) == 0


def test_batch_frames_are_independent():
    a = v8(ROWS)
    b = v8([(51, 50, 20, 10, 0.8, 0.1), (300, 300, 10, 10, 0.6, 0.0)])
    b = torch.cat([b, torch.zeros(1, 6, 3)], 2)   # pad to the same N with zero scores
    d = decode(torch.cat([a, b]), conf=0.25)
    # frame 1's box at x=51 is not suppressed by frame 0's A
    assert d.frame_idx.tolist() == [0, 0, 0, 1, 1]
    assert d.confidence.tolist() == pytest.approx([0.9, 0.7, 0.3, 0.8, 0.6])


def test_yolov5_objectness_times_class():
    rows = torch.tensor([[[50, 50, 20, 10, 0.9, 0.5, 1.0],      # score 0.9 * 1.0 = 0.9 class 1
                          [50, 50, 20, 10, 0.2, 1.0, 0.0],      # obj 0.2 < conf: dropped
                          [100, 100, 10, 10, 0.5, 0.8, 0.1]]])  # 0.4 class 0
    d = decode(rows, format="yolov5", conf=0.25)
    assert d.class_id.tolist() == [1, 0]
    assert d.confidence.tolist() == pytest.approx([0.9, 0.4])
    assert d.bbox.tolist() == [[40, 45, 60, 55], [95, 95, 105, 105]]


def test_end2end_already_nms():
    out = torch.tensor([[[10, 10, 20, 20, 0.9, 2], [10, 10, 20, 20, 0.8, 2], [0, 0, 5, 5, 0.1, 0]],
                        [[1, 2, 3, 4, 0.3, 1], [0, 0, 0, 0, 0.0, 0], [0, 0, 0, 0, 0.0, 0]]], dtype=torch.float32)
    d = decode(out, format="end2end", conf=0.25, max_det=300)
    assert d.frame_idx.tolist() == [0, 0, 1]
    assert d.class_id.tolist() == [2, 2, 1]            # no NMS: the model already did it
    assert d.bbox.tolist() == [[10, 10, 20, 20], [10, 10, 20, 20], [1, 2, 3, 4]]
    d = decode(out, format="end2end", conf=0.25, max_det=1)
    assert d.frame_idx.tolist() == [0, 1] and d.confidence.tolist() == pytest.approx([0.9, 0.3])


def test_bad_input():
    with pytest.raises(ValueError, match="yolov8, yolov5, end2end"):
        decode(torch.zeros(1, 6, 2), format="yolox")
    with pytest.raises(ValueError, match="3-d"):
        decode(torch.zeros(6, 2))
    assert xywh_to_xyxy(torch.tensor([10.0, 20.0, 4.0, 6.0])).tolist() == [8, 17, 12, 23]
    empty = decode(torch.zeros(2, 7, 0))
    assert empty.bbox.shape == (0, 4) and empty.frame_idx.dtype == torch.int64
