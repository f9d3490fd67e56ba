"""On CUDA: DLPack round trips with CuPy (and JAX when it has a GPU backend), in-place CuPy
edits seen by the next stage and by the video sink, drawing / tiling / translating on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.ops.draw import Annotate, draw_boxes, draw_text
from vidflow.sinks.tiler import tile
from vidflow.translate import from_frames, to_columns, to_frames

pytestmark = pytest.mark.gpu


def make_batch(device) -> Batch:
    g = torch.Generator().manual_seed(3)
    n = 6
    xy = torch.rand(n, 2, generator=g) * 200
    objs = Objects.create(frame_idx=torch.tensor([0, 0, 1, 1, 1, 0]), bbox=torch.cat([xy, xy + 40], 1),
                          confidence=torch.rand(n, generator=g), class_id=torch.tensor([0, 1, 2, 0, 1, 2]),
                          object_id=torch.tensor([1, 2, -1, 4, 5, 6]),
                          attrs={"embed.vector": torch.randn(n, 16, generator=g).half(),
                                 "track.bbox": torch.cat([xy, xy + 41], 1)})
    b = Batch(images=torch.randint(0, 255, (2, 3, 270, 480), dtype=torch.uint8, generator=g),
              frames=(FrameInfo(0, 0, 0.0, width=480, height=270), FrameInfo(1, 0, 0.0, width=480, height=270)),
              objects=objs, tensors={"detect.input": torch.rand(2, 3, 64, 64, generator=g).half(),
                                     "detect.output0": torch.randn(2, 7, 100, generator=g)},
              labels={"objects": ("box", "disc", "triangle")})
    return b.replace(images=b.images.to(device), objects=b.objects.to(device),
                     tensors={k: v.to(device) for k, v in b.tensors.items()})


def user_tensors(batch: Batch) -> dict[str, torch.Tensor]:
    m = to_frames(batch)[0]
    return {"frame": m["frame"], "input-fp16": m["infer-tensor-frame-detect.input"],
            "output": m["infer-tensor-frame-detect.output0"], "bbox": m["bbox"], "object-id": m["object-id"],
            "embed-fp16": m["infer-tensor-object-embed.vector"]}


def test_cupy_round_trips_zero_copy(cuda_device):
    cp = pytest.importorskip("cupy")
    for name, t in user_tensors(make_batch(cuda_device)).items():
        a = cp.from_dlpack(t)
        assert a.shape == tuple(t.shape) and str(a.dtype) == str(t.dtype).removeprefix("torch."), name
        assert a.data.ptr == t.data_ptr(), name  # same device memory
        back = torch.from_dlpack(a)
        assert back.data_ptr() == t.data_ptr() and back.device == t.device and torch.equal(back, t), name


def test_jax_gpu_round_trip(cuda_device):
    jax = pytest.importorskip("jax")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX has no GPU backend here")
    jax.config.update("jax_enable_x64", True)
    for name, t in user_tensors(make_batch(cuda_device)).items():
        a = jax.numpy.from_dlpack(t)
        back = torch.from_dlpack(a)
        assert back.device.type == "cuda" and torch.equal(back, t), name


def test_cupy_in_place_edit_seen_downstream_and_in_video(cuda_device, tmp_path):
    cp = pytest.importorskip("cupy")
    av = pytest.importorskip("av")
    from vidflow.sinks.video import VideoSink, nvenc_available

    batch = make_batch(cuda_device)

    def paint(b: Batch) -> Batch:  # user stage in CuPy, editing the frames in place
        for m in to_frames(b):
            cp.from_dlpack(m["frame"])[:, 40:100, 60:200] = cp.asarray([255, 0, 255], dtype=cp.uint8)[:, None, None]
        return b

    out = paint(batch)
    assert out.images[:, :, 40:100, 60:200].eq(torch.tensor([255, 0, 255], device=cuda_device)[:, None, None]).all()
    with VideoSink(tmp_path / "v", tiled=False, draw=False) as sink:
        sink.write(out)
    with av.open(str(tmp_path / "v" / "0.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(frame[45:95, 65:195].astype(int) - [255, 0, 255]).mean() < 12
    print(f"nvenc_available={nvenc_available()}")


def test_draw_on_cuda_matches_cpu(cuda_device):
    b = make_batch(cuda_device)
    cpu = b.replace(images=b.images.cpu().clone(), objects=b.objects.to("cpu"), tensors={})
    gpu = b.replace(images=b.images.clone())
    Annotate()(cpu)
    Annotate()(gpu)
    assert torch.equal(gpu.images.cpu(), cpu.images)
    img = torch.zeros(2, 3, 64, 64, dtype=torch.uint8, device=cuda_device)
    draw_boxes(img, torch.tensor([[4.0, 4.0, 30.0, 30.0]], device=cuda_device), torch.tensor([1], device=cuda_device),
               (1, 2, 3), thickness=2)
    draw_text(img, ["ok"], torch.tensor([[10.0, 40.0]], device=cuda_device), torch.tensor([0], device=cuda_device),
              scale=2)
    assert img.device.type == "cuda" and img[1, 0, 4, 10] == 1 and img[0].eq(255).any()


def test_translate_and_tile_on_cuda(cuda_device):
    b = make_batch(cuda_device)
    back = from_frames(to_frames(b))
    assert back.device.type == "cuda"
    for c in ("frame_idx", "bbox", "object_id", "confidence"):
        order = torch.argsort(b.objects.frame_idx, stable=True)
        assert torch.equal(getattr(back, c), getattr(b.objects, c)[order]), c
    assert torch.equal(back.attrs["embed.vector"], b.objects.attrs["embed.vector"][order])
    cols = to_columns(b)
    assert cols["bbox"].device.type == "cuda" and cols["num_objects"].tolist() == [3, 3]
    mosaic = tile(b.images, [0, 3], 2, 2, (960, 540))
    ref = tile(b.images.cpu(), [0, 3], 2, 2, (960, 540))
    assert mosaic.device.type == "cuda" and torch.equal(mosaic.cpu(), ref)  # cells are 480x270: no resize
