"""Secondary stages crop with the instance mask (``crop="mask"``): pixels outside the object's
mask get the fill value, inside they are the image; objects without masks get box crops and one
warning."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.crops import crop_resize, mask_fill
from vidflow.ops.masks import Masks
from vidflow.stages.classify import Classifier
from vidflow.stages.embed import Embedder


def _image(h: int = 32, w: int = 40) -> torch.Tensor:
    """Every pixel and channel a different value (so a crop pixel tells where it came from)."""
    v = torch.arange(3 * h * w).reshape(1, 3, h, w) % 251
    return v.to(torch.uint8)


def _objects(with_masks: bool = True) -> Objects:
    bbox = torch.tensor([[8.0, 4.0, 24.0, 20.0], [20.0, 10.0, 36.0, 26.0]])
    data = torch.zeros(2, 16, 16, dtype=torch.bool)
    data[0, :, :8] = True                     # object 0: the left half of its box
    data[1, 4:12, 4:12] = True                # object 1: a square in the middle
    masks = Masks(data, bbox[:, :2].long()) if with_masks else None
    return Objects.create(frame_idx=torch.tensor([0, 0]), bbox=bbox, class_id=torch.tensor([0, 1]), masks=masks)


def test_mask_fill_keeps_the_image_inside_and_fills_outside():
    img, objs = _image(), _objects()
    crops = crop_resize(img, objs.bbox, objs.frame_idx, (16, 16))       # 1:1: each crop pixel is one image pixel
    out = mask_fill(crops, objs.masks, torch.tensor([0, 1]), objs.bbox, 114.0)
    inside = objs.masks.data[:, None].expand_as(out)
    assert torch.equal(out[inside], crops[inside])
    assert (out[~inside] == 114.0).all() and inside.any() and (~inside).any()
    x0, y0 = 8, 4                                                        # crop pixel (r, c) = image (y0 + r, x0 + c)
    assert torch.equal(out[0, :, :, :8], img[0, :, y0:y0 + 16, x0:x0 + 8].float())
    # per-channel fill, a subset of the objects in another order, twice the resolution
    big = crop_resize(img, objs.bbox[[1]], objs.frame_idx[[1]], (32, 32))
    out = mask_fill(big, objs.masks, torch.tensor([1]), objs.bbox[[1]], (1.0, 2.0, 3.0))
    on = objs.masks.data[1].repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(out[0][:, on], big[0][:, on])
    assert torch.equal(out[0][:, ~on], torch.tensor([1.0, 2.0, 3.0])[:, None].expand(3, int((~on).sum())))


def test_mask_fill_shapes_are_checked():
    objs = _objects()
    crops = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="rows"):
        mask_fill(crops, objs.masks, torch.tensor([0]), objs.bbox, 0.0)
    with pytest.raises(ValueError, match="fill"):
        mask_fill(crops, objs.masks, torch.tensor([0, 1]), objs.bbox, (1.0, 2.0))
    assert mask_fill(crops[:0], objs.masks, torch.tensor([], dtype=torch.int64), objs.bbox[:0], 0.0).shape[0] == 0


class Recorder:
    """A classifier model that keeps the crops it was given."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return torch.zeros(x.shape[0], 2)


def _batch(with_masks: bool = True) -> Batch:
    return Batch(images=torch.full((1, 3, 32, 40), 200, dtype=torch.uint8),
                 frames=(FrameInfo(0, 0, 0.0, width=40, height=32),), objects=_objects(with_masks))


@pytest.mark.parametrize("stage", [Classifier, Embedder])
def test_secondary_stage_with_crop_mask_sees_the_fill_outside_the_mask(stage):
    rec = Recorder()
    st = stage(rec, size=16, mean=(0, 0, 0), std=(1, 1, 1), crop="mask", fill=0)
    assert st.reads_masks and not stage(rec, size=16).reads_masks
    st(_batch())
    x = rec.inputs[-1] * 255                                      # (x / 255 - 0) / 1
    inside = _objects().masks.data[:, None].expand_as(x)
    torch.testing.assert_close(x[inside], torch.full_like(x[inside], 200.0))
    assert (x[~inside] == 0).all()


def test_objects_without_masks_get_box_crops_and_one_warning():
    rec = Recorder()
    st = Classifier(rec, size=16, crop="mask")
    with pytest.warns(UserWarning, match="no masks.*box crops"):
        st(_batch(with_masks=False))
    st(_batch(with_masks=False))                                  # once per stage (warnings are errors here)
    for x in rec.inputs:
        torch.testing.assert_close(x * 255, torch.full_like(x, 200.0))


def test_crop_and_fill_are_checked():
    with pytest.raises(ValueError, match="crop"):
        Classifier(Recorder(), crop="polygon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fill"):
        Embedder(Recorder(), fill=(1, 2))
