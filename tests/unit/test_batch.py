import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects


def objs(n=4, frames=2):
    return Objects.create(frame_idx=torch.arange(n) % frames, bbox=torch.rand(n, 4) * 100,
                          confidence=torch.linspace(0.1, 0.9, n), class_id=torch.arange(n) % 3)


def test_objects_defaults_and_repr():
    o = objs()
    assert len(o) == 4
    assert o.object_id.tolist() == [-1] * 4
    assert o.bbox.dtype == torch.float32 and o.class_id.dtype == torch.int64
    r = repr(o)
    assert "n=4" in r and "bbox=[4, 4] float32" in r


def test_objects_mask_index_slice_for_frame():
    o = objs(6, 3).with_attrs(**{"embed.vector": torch.randn(6, 8)})
    hi = o[o.confidence > 0.5]
    assert len(hi) == 3 and hi.attrs["embed.vector"].shape == (3, 8)
    assert len(o[torch.tensor([0, 2])]) == 2
    assert len(o[1:3]) == 2
    assert len(o[-1]) == 1 and len(o[0]) == 1
    f1 = o.for_frame(1)
    assert f1.frame_idx.tolist() == [1, 1]


@pytest.mark.parametrize("bad,msg", [
    (dict(bbox=torch.zeros(3, 5)), r"Objects.bbox: expected shape \(3, 4\), got \(3, 5\)"),
    (dict(confidence=torch.zeros(3, dtype=torch.float64)), "expected dtype torch.float32"),
    (dict(class_id=torch.zeros(2, dtype=torch.int64)), r"class_id: expected shape \(3\)"),
])
def test_objects_validation_messages(bad, msg):
    base = dict(frame_idx=torch.zeros(3, dtype=torch.int64), bbox=torch.zeros(3, 4), confidence=torch.zeros(3),
                class_id=torch.zeros(3, dtype=torch.int64), object_id=torch.zeros(3, dtype=torch.int64),
                tracker_confidence=torch.zeros(3))
    base.update(bad)
    with pytest.raises(ValueError, match=msg):
        Objects(**base)


def test_objects_attr_leading_dim_checked():
    with pytest.raises(ValueError, match=r"attrs\['x.y'\]: expected a tensor with leading dim 4"):
        objs().with_attrs(**{"x.y": torch.zeros(3)})


def test_objects_cat_offsets():
    a, b = objs(2, 1), objs(3, 1)
    c = Objects.cat([a, b], frame_offsets=[0, 1])
    assert c.frame_idx.tolist() == [0, 0, 1, 1, 1]


def test_batch_validation_and_replace():
    img = torch.zeros(2, 3, 8, 10, dtype=torch.uint8)
    fr = (FrameInfo(0, 0, 0.0, 0, 20, 16), FrameInfo(1, 0, 0.0, 0, 10, 8))
    b = Batch(images=img, frames=fr)
    assert len(b) == 2 and len(b.objects) == 0 and b.size == (10, 8)
    with pytest.raises(ValueError, match="expected 2 FrameInfo"):
        Batch(images=img, frames=fr[:1])
    with pytest.raises(ValueError, match=r"Batch.images: expected shape \(\*, 3, \*, \*\), got \(2, 8, 10\)"):
        Batch(images=torch.zeros(2, 8, 10, dtype=torch.uint8), frames=fr)
    with pytest.raises(ValueError, match="expected dtype torch.uint8"):
        Batch(images=img.float(), frames=fr)
    with pytest.raises(ValueError, match=r"tensors\['d.input'\]: expected a tensor with leading dim 2"):
        Batch(images=img, frames=fr, tensors={"d.input": torch.zeros(3, 1)})
    b2 = b.with_tensors(**{"d.input": torch.zeros(2, 3)})
    assert "d.input" in b2.tensors and "d.input" not in b.tensors
    assert "images=[2, 3, 8, 10] uint8" in repr(b2)


def test_image_source_mapping_roundtrip():
    img = torch.zeros(2, 3, 100, 200, dtype=torch.uint8)
    fr = (FrameInfo(0, 0, 0.0, 0, 400, 200), FrameInfo(1, 0, 0.0, 0, 100, 100, region=(50.0, 0.0, 150.0, 100.0)))
    b = Batch(images=img, frames=fr)
    boxes = torch.tensor([[10.0, 10, 20, 20], [60, 10, 70, 20]])
    fi = torch.tensor([0, 1])
    src = b.image_to_source(boxes, fi)
    assert src.tolist() == [[20.0, 20.0, 40.0, 40.0], [10.0, 10.0, 20.0, 20.0]]
    assert torch.allclose(b.source_to_image(src, fi), boxes)


def test_frameinfo_checks():
    with pytest.raises(ValueError):
        FrameInfo(0, -1, 0.0)


def test_geometry_built_once_and_carried_by_replace():
    img = torch.zeros(2, 3, 100, 200, dtype=torch.uint8)
    fr = (FrameInfo(0, 0, 0.0, 0, 400, 200), FrameInfo(1, 0, 0.0, 0, 100, 100, region=(50.0, 0.0, 150.0, 100.0)))
    b = Batch(images=img, frames=fr)
    regions = b.regions()
    b2 = b.with_tensors(**{"x.y": torch.zeros(2)})
    assert b2.regions() is regions and b2.source_sizes().tolist() == [[400.0, 200.0], [100.0, 100.0]]
    b3 = b.replace(images=torch.zeros(2, 3, 50, 100, dtype=torch.uint8))     # other images: rebuilt
    assert b3.regions() is not regions and b3.regions()[0].tolist() == [0.0, 0.0, 100.0, 50.0]
