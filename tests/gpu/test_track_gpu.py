"""GPU: crops, secondary models, gallery and tracker keep tensors on the device; association
timing (CPU vs device) and crop timing printed (run with ``-s``)."""

from __future__ import annotations

import time

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


def test_tracker_on_device_matches_cpu_and_prints_association_timing(cuda_device):
    ref = [Tracker()(b.replace(images=b.images.cpu(), objects=b.objects.to("cpu"))) for b in scene_batches(12, 4)]
    tr = Tracker()
    for b, r in zip(scene_batches(12, 4), ref):
        out = tr(b).objects
        assert out.device.type == "cuda" and out.attrs[TRACKER_BBOX].device.type == "cuda"
        assert torch.equal(out.object_id.cpu(), r.objects.object_id)
    tr = Tracker(assoc_device="device")
    for b, r in zip(scene_batches(12, 4), ref):
        assert torch.equal(tr(b).objects.object_id.cpu(), r.objects.object_id)
    print()
    for n in (10, 30, 100):
        batches = scene_batches(n, 12)
        for mode in ("cpu", "device"):
            tr = Tracker(assoc_device=mode)
            tr(batches[0]), tr(batches[1])  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in batches[2:]:
                tr(b)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1000 / (10 * 8)
            print(f"association {n:3d} objects/frame, batch 8, assoc on {mode:6s}: {ms:6.2f} ms/frame")


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
    for method in ("gather", "roi_align") if have_roi_align() else ("gather",):
        crop_resize(b.images, boxes, fi, (64, 64), method=method)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            crop_resize(b.images, boxes, fi, (64, 64), method=method)
        torch.cuda.synchronize()
        print(f"\ncrop_resize {method}: {len(boxes)} crops from 4x1080p -> 64x64: "
              f"{(time.perf_counter() - t0) * 1000 / 20:.3f} ms")
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
