"""Classifier / Embedder on crops: filters, labels, L2 vectors, `every: K` caching, scaled batches."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.stages.classify import Classifier
from vidflow.stages.embed import Embedder


class MeanColour(torch.nn.Module):
    """``[R,3,h,w] -> [R,3]``: the crop's mean colour (as logits: argmax = dominant channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * 10


def scene_batch(frame_nums=(0,), source_id=0, scale=1, object_ids=None) -> Batch:
    """A 96x64 source with a red, a green and a blue square; optionally scaled down in the batch."""
    img = torch.zeros(3, 64, 96, dtype=torch.uint8)
    img[0, 8:28, 8:28] = 250  # red
    img[1, 8:28, 40:60] = 250  # green
    img[2, 30:60, 60:90] = 250  # blue, larger
    boxes = torch.tensor([[8, 8, 28, 28], [40, 8, 60, 28], [60, 30, 90, 60]], dtype=torch.float32)
    b = len(frame_nums)
    images = img[None].repeat(b, 1, 1, 1)
    region = None
    if scale != 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=1 / scale, mode="area").round().to(torch.uint8)
        region = (0.0, 0.0, 96 / scale, 64 / scale)
    ids = torch.tensor(object_ids if object_ids is not None else [-1, -1, -1]).repeat(b)
    objs = Objects.create(frame_idx=torch.arange(b).repeat_interleave(3), bbox=boxes.repeat(b, 1),
                          class_id=torch.tensor([0, 1, 2]).repeat(b), object_id=ids)
    frames = tuple(FrameInfo(source_id, n, n / 30, 0, 96, 64, region) for n in frame_nums)
    return Batch(images=images, frames=frames, objects=objs, labels={"objects": ("box", "disc", "triangle")})


@pytest.mark.parametrize("scale", [1, 2])
def test_classifier_labels_and_confidence(scale):
    clf = Classifier(MeanColour(), size=(16, 16), labels=["red", "green", "blue"], name="colour")
    out = clf(scene_batch(scale=scale))
    assert out.objects.attrs["colour.label"].tolist() == [0, 1, 2]
    conf = out.objects.attrs["colour.confidence"]
    assert conf.dtype == torch.float32 and (conf > 0.9).all()
    assert out.labels["colour"] == ("red", "green", "blue")


def test_filters_on_classes_and_min_size():
    clf = Classifier(MeanColour(), size=8, labels=["r", "g", "b"], on=["disc", 2])
    out = clf(scene_batch()).objects
    assert out.attrs["classify.label"].tolist() == [-1, 1, 2]
    assert out.attrs["classify.confidence"][0] == 0
    emb = Embedder(MeanColour(), size=8, min_size=25)  # only the 30 px blue square is big enough
    v = emb(scene_batch()).objects.attrs["embed.vector"]
    assert v.shape == (3, 3)
    assert v[:2].abs().sum() == 0
    torch.testing.assert_close(v[2].norm(), torch.tensor(1.0))
    assert emb.runs == 1


def test_label_count_mismatch_and_bad_arguments():
    with pytest.raises(ValueError, match="2 labels"):
        Classifier(MeanColour(), size=8, labels=["a", "b"])(scene_batch())
    for kw in ({"every": 0}, {"size": (0, 4)}, {"min_size": -1}, {"mean": (0, 0)}, {"activation": "relu"},
               {"on": "disc"}):
        with pytest.raises(ValueError):
            Classifier(MeanColour(), **{"size": 8, **kw})
    with pytest.raises(ValueError):
        Classifier(None, size=8)


def test_every_k_reuses_tracked_results_and_matches_every_frame():
    class Counter(torch.nn.Module):
        """Embeds the frame number written into pixel (0,0) of the crop's red channel."""

        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0] * 0 + 1, x[:, 1].mean((1, 2)), x[:, 2].mean((1, 2))], 1)

    def batches(k0: int, n: int) -> Batch:
        b = scene_batch(frame_nums=tuple(range(k0, k0 + n)), object_ids=[5, 6, -1])
        imgs = b.images.clone()
        for j in range(n):  # the green square changes every frame, so results tell frames apart
            imgs[j, 1, 8:28, 40:60] = 10 * (k0 + j)
        return b.replace(images=imgs)

    every, fresh = Embedder(Counter(), size=8, every=3), Embedder(Counter(), size=8, every=1)
    got, ref = [], []
    for k0 in range(0, 12, 4):
        got.append(every(batches(k0, 4)).objects.attrs["embed.vector"].view(4, 3, 3))
        ref.append(fresh(batches(k0, 4)).objects.attrs["embed.vector"].view(4, 3, 3))
    got, ref = torch.cat(got), torch.cat(ref)  # [frame, object, D]
    for f in range(12):
        last_run = f - f % 3  # tracked objects ran on frames 0, 3, 6, 9
        torch.testing.assert_close(got[f, :2], ref[last_run, :2])
        torch.testing.assert_close(got[f, 2], ref[f, 2])  # untracked: every frame
    assert every.runs == 4 * 2 + 12 and fresh.runs == 36
    every.reset(0)
    assert not every._slot


def test_cache_is_bounded_and_pruned():
    emb = Embedder(MeanColour(), size=8, every=100)
    emb.CACHE_SIZE = 2
    emb(scene_batch(object_ids=[1, 2, 3]))
    assert len(emb._slot) == 2  # bounded: one evicted
    emb(scene_batch(frame_nums=(500,), object_ids=[7, -1, -1]))  # the others unseen for 500 frames
    assert set(emb._slot) == {(0, 7)}


def test_empty_batch_still_writes_attributes():
    b = scene_batch()
    b = b.replace(objects=b.objects[torch.zeros(3, dtype=torch.bool)])
    out = Embedder(MeanColour(), size=8)(b)
    assert out.objects.attrs["embed.vector"].shape == (0, 3)
    out = Classifier(MeanColour(), size=8)(b)
    assert out.objects.attrs["classify.label"].shape == (0,)


def test_demo_embedder_every_k_consistent_with_every_frame_on_tracked_objects():
    """Demo embedder on a rendered scene, objects tracked: vectors reused for up to 2 frames
    stay close to the fresh ones (same object, moved a little)."""
    from vidflow.scenes import Scene
    from vidflow.stages.track import Tracker

    scene = Scene(640, 480, seed=5, num_objects=6)
    tracker, every, fresh = Tracker(), Embedder("demo", every=3), Embedder("demo")
    sims = []
    for s in range(0, 24, 4):
        imgs, fi, bb, cl = [], [], [], []
        for j in range(4):
            rgb, objs = scene.render(s + j)
            imgs.append(torch.from_numpy(rgb).permute(2, 0, 1))
            for o in objs:
                fi.append(j), bb.append(o["bbox"]), cl.append(o["class_id"])
        b = Batch(images=torch.stack(imgs), frames=tuple(FrameInfo(0, s + j, 0.0, 0, 640, 480) for j in range(4)),
                  objects=Objects.create(frame_idx=torch.tensor(fi), bbox=torch.tensor(bb), class_id=torch.tensor(cl)))
        b = tracker(b)
        tracked = b.objects.object_id >= 0
        a, r = every(b).objects.attrs["embed.vector"], fresh(b).objects.attrs["embed.vector"]
        sims.append((a * r).sum(1)[tracked])
    sims = torch.cat(sims)
    assert len(sims) > 100
    assert every.runs < 0.5 * fresh.runs  # most tracked objects were served from the cache
    assert sims.mean() > 0.9 and (sims > 0.6).float().mean() > 0.95, sims.sort().values[:10]
