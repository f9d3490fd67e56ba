"""On CUDA: mask crops equal the CPU's, and a pipeline on the GPU builds a segment detector's masks
only for a sink that reads them (not run on a GPU yet: written in a session without one)."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_mask_crops import _image, _objects
from tests.unit.test_masks_on_demand import Probe, _seg_engine
from vidflow.ops.crops import crop_resize, mask_fill
from vidflow.pipeline import Pipeline
from vidflow.stages.classify import Classifier
from vidflow.stages.detect import Detector
from vidflow.testing import FakeSource

pytestmark = pytest.mark.gpu


def test_mask_fill_on_cuda_equals_cpu():
    img, objs = _image(), _objects()
    rows = torch.tensor([1, 0])
    box = objs.bbox[rows]
    want = mask_fill(crop_resize(img, box, objs.frame_idx[rows], (24, 20)), objs.masks, rows, box, (1.0, 2.0, 3.0))
    dev = torch.device("cuda")
    o = objs.to(dev)
    crops = crop_resize(img.to(dev), box.to(dev), o.frame_idx[rows.to(dev)], (24, 20))
    got = mask_fill(crops, o.masks, rows.to(dev), box.to(dev), (1.0, 2.0, 3.0))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=0)


@pytest.mark.parametrize("reads", [False, True])
def test_pipeline_on_cuda_builds_masks_only_when_read(reads):
    eng = _seg_engine()
    eng.device = torch.device("cuda")
    fn = eng.fn
    eng.fn = lambda x: {k: v.cuda() for k, v in fn(x).items()}
    probe = Probe(reads)
    crop = Classifier(lambda x: torch.zeros(x.shape[0], 2, device=x.device), crop="mask")
    stages = [Detector(eng, head="segment"), *([crop] if reads else [])]
    Pipeline([FakeSource(4)], stages=stages, sinks=[probe], device="cuda").run()
    assert probe.seen and all(n > 0 and m == reads for n, m in probe.seen)
