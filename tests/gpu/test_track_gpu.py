"""GPU: crops, secondary models, gallery and tracker keep tensors on the device, with the same
results as on the CPU (timings live in benchmarks/track.py, not here)."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import TRACKER_BBOX, Batch, FrameInfo, Objects
from vidflow.gallery import Gallery, Identify
from vidflow.ops.crops import crop_resize, have_roi_align
from vidflow.scenes import Scene
from vidflow.stages.classify import Classifier
from vidflow.stages.embed import Embedder
from vidflow.stages.track import Tracker

pytestmark = pytest.mark.gpu


def scene_batches(n_objects: int, batches: int, bs: int = 8, device="cuda", render=False, seed=0):
    scene = Scene(1920, 1080, seed=seed, num_objects=n_objects)
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, batches * bs, bs):
        fi, bb, cl, imgs = [], [], [], []
        for j in range(bs):
            if render:
                rgb, objs = scene.render(s + j)
                imgs.append(torch.from_numpy(rgb).permute(2, 0, 1))
            else:
                objs = scene.boxes(s + j)
            for o in objs:
                fi.append(j), bb.append(o["bbox"]), cl.append(o["class_id"])
        bbox = torch.tensor(bb) + torch.randn(len(bb), 4, generator=g) * 2
        objs = Objects.create(frame_idx=torch.tensor(fi), bbox=bbox, class_id=torch.tensor(cl),
                              confidence=0.5 + 0.5 * torch.rand(len(bb), generator=g))
        images = torch.stack(imgs) if render else torch.zeros(bs, 3, 4, 4, dtype=torch.uint8)
        infos = tuple(FrameInfo(0, s + j, (s + j) / 30, 0, 1920, 1080) for j in range(bs))
        out.append(Batch(images=images, frames=infos, objects=objs).replace(
            images=images.to(device), objects=objs.to(device)))
    return out


def test_tracker_on_device_matches_cpu(cuda_device):
    """CUDA batches in, CUDA columns out, the same ids and boxes as the same batches on the CPU;
    64 streams in one batch too."""
    on_cpu = Tracker()
    ref = [on_cpu(b.replace(images=b.images.cpu(), objects=b.objects.to("cpu"))) for b in scene_batches(12, 4)]
    tr = Tracker()
    for b, r in zip(scene_batches(12, 4), ref):
        out = tr(b).objects
        assert out.device.type == "cuda" and out.attrs[TRACKER_BBOX].device.type == "cuda"
        assert torch.equal(out.object_id.cpu(), r.objects.object_id)
        assert torch.equal(out.attrs[TRACKER_BBOX].cpu(), r.objects.attrs[TRACKER_BBOX])
    many = []                     # 64 streams: the same scene, shifted a little per stream
    for i, b in enumerate(scene_batches(10, 6, bs=1, device="cpu")):
        o, n = b.objects, len(b.objects)
        shift = torch.arange(64, dtype=torch.float32).repeat_interleave(n)[:, None] * 0.5
        objs = Objects.create(frame_idx=torch.arange(64).repeat_interleave(n), bbox=o.bbox.repeat(64, 1) + shift,
                              confidence=o.confidence.repeat(64), class_id=o.class_id.repeat(64))
        infos = tuple(FrameInfo(j, i, i / 30, 0, 1920, 1080) for j in range(64))
        many.append(Batch(images=torch.zeros(64, 3, 4, 4, dtype=torch.uint8, device=cuda_device), frames=infos,
                          objects=objs.to(cuda_device)))
    cpu, gpu = Tracker(), Tracker()
    for b in many:
        a = gpu(b).objects
        r = cpu(b.replace(images=b.images.cpu(), objects=b.objects.to("cpu"))).objects
        assert a.object_id.device.type == "cuda" and torch.equal(a.object_id.cpu(), r.object_id)
    assert (r.object_id >= 0).float().mean() > 0.5


def test_crops_and_secondary_models_stay_on_device(cuda_device):
    b = scene_batches(12, 1, bs=4, render=True)[0]
    boxes, fi = b.objects.bbox, b.objects.frame_idx
    g = crop_resize(b.images, boxes, fi, (64, 64), method="gather")
    assert g.device.type == "cuda" and g.shape == (len(boxes), 3, 64, 64)
    torch.testing.assert_close(g.cpu(), crop_resize(b.images.cpu(), boxes.cpu(), fi.cpu(), (64, 64), method="gather"),
                               atol=1e-3, rtol=0)
    if have_roi_align():
        # same sample points; float32 coordinates near x=1900 differ in the last bits (~1e-4 px),
        # times pixel gradients up to 255/px: a few hundredths of a level
        torch.testing.assert_close(crop_resize(b.images, boxes, fi, (64, 64), method="roi_align"), g, atol=0.05, rtol=0)
    emb = Embedder("demo", every=2)
    out = emb(Tracker()(b))
    v = out.objects.attrs["embed.vector"]
    assert v.device.type == "cuda" and v.shape == (len(boxes), 64)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(len(boxes), device="cuda"))
    clf = Classifier(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), size=16)
    lab = clf(out).objects.attrs["classify.label"]
    assert lab.device.type == "cuda" and (lab >= 0).all()
    gal = Gallery()
    gal.enrol("first", v[:1])
    ident = Identify(gal, threshold=0.99)(out).objects.attrs["identify.identity"]
    assert ident.device.type == "cuda" and ident[0] == 0
