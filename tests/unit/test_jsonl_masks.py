"""JSONL records carry instance masks as COCO RLE (pycocotools decodes them) and keypoints."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.masks import Masks
from vidflow.sinks.encoders import JsonlEncoder
from vidflow.sinks.records import host_frames

mask_util = pytest.importorskip("pycocotools.mask")


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    bbox = torch.tensor([[1.0, 2.0, 11.0, 8.0], [10.0, 0.0, 20.0, 6.0], [3.0, 3.0, 13.0, 9.0]])
    data = torch.rand(3, 6, 10, generator=g) > 0.5
    masks = Masks(data, bbox[:, :2].long())
    kp = torch.rand(3, 4, 3, generator=g) * 20
    objs = Objects.create(frame_idx=torch.tensor([0, 0, 1]), bbox=bbox, class_id=torch.tensor([0, 1, 2]),
                          masks=masks, keypoints=kp)
    return Batch(images=torch.zeros(2, 3, 24, 32, dtype=torch.uint8),
                 frames=tuple(FrameInfo(0, i, 0.0, width=32, height=24) for i in range(2)),
                 objects=objs, labels={"objects": ("a", "b", "c")})


def test_jsonl_masks_are_coco_rle_in_source_pixels_and_keypoints_lists():
    b = _batch()
    recs = JsonlEncoder().records(host_frames(b))
    recs = [orjson.loads(orjson.dumps(r)) for r in recs]          # survives the JSON round trip
    objs = [o for r in recs for o in r["objects"]]
    assert [len(r["objects"]) for r in recs] == [2, 1]
    for k, o in enumerate(objs):
        full = np.zeros((24, 32), dtype=bool)
        x0, y0 = b.objects.masks.origin[k].tolist()
        m = b.objects.masks.data[k].numpy()
        h, w = min(m.shape[0], 24 - y0), min(m.shape[1], 32 - x0)
        full[y0:y0 + h, x0:x0 + w] = m[:h, :w]
        rle = dict(o["mask"], counts=o["mask"]["counts"].encode())
        assert o["mask"]["size"] == [24, 32]
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), full)
        np.testing.assert_allclose(o["keypoints"], b.objects.keypoints[k].numpy(), atol=0.006)


def test_jsonl_without_masks_has_no_mask_key():
    b = _batch()
    b = Batch(images=b.images, frames=b.frames, labels=b.labels,
              objects=Objects.create(frame_idx=b.objects.frame_idx, bbox=b.objects.bbox, class_id=b.objects.class_id))
    objs = [o for r in JsonlEncoder().records(host_frames(b)) for o in r["objects"]]
    assert objs and all("mask" not in o and "keypoints" not in o for o in objs)
