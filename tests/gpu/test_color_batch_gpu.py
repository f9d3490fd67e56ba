"""The batched convert kernel on CUDA: ``convert_batch_into`` (one launch for a batch of NV12
frames of mixed sizes, matrices and ranges) and ``Muxer.assemble`` give what the per-frame
``convert_into`` gives, without synchronising the device.

Both kernels run the same Triton code, but they are compiled separately and the compiler may fuse
the bilinear multiply-adds differently, so a scaled pixel may differ by 1 (measured on an H200:
bit-exact without scaling, a few pixels off by 1 with it)."""

from __future__ import annotations

import time

import pytest
import torch

from vidflow import Muxer
from vidflow.batch import FrameInfo
from vidflow.ops.color import convert_batch_into, convert_into, triton_available
from vidflow.sources.base import SourceFrame

pytestmark = pytest.mark.gpu


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to within 1 on at most 1% of the values (the compilers' floating-point fusion)."""
    d = (a.int() - b.int()).abs()
    return a.shape == b.shape and int(d.max()) <= 1 and float((d > 0).float().mean()) <= 0.01

# (displayed w, h, coded w, h, row pitch, matrix, full range): the 1080p one a padded NVDEC-like surface
_SPECS = [
    (1920, 1080, 1920, 1088, 2048, "bt709", False),
    (1280, 720, 1280, 720, 1280, "bt709", True),
    (640, 480, 640, 480, 640, "bt601", False),
    (640, 480, 640, 480, 768, "bt601", True),
    (1920, 1080, 1920, 1080, 1920, "bt601", False),
    (1280, 720, 1280, 736, 1536, "bt601", True),
]


def _frames(device, specs=_SPECS, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i, (w, h, wc, hc, pitch, matrix, full) in enumerate(specs):
        surface = torch.randint(0, 256, (hc * 3 // 2, pitch), dtype=torch.uint8, device=device, generator=g)
        out.append(SourceFrame(FrameInfo(i, 0, 0.0, width=w, height=h), surface[:, :wc], "nv12", matrix, full))
    return out


def _per_frame(frames, out, regions):
    for i, (f, (x0, y0, x1, y1)) in enumerate(zip(frames, regions)):
        convert_into(f, out[i, :, y0:y1, x0:x1])
    return out


@pytest.fixture
def counted(monkeypatch, cuda_device):
    """Counts launches of the per-frame and the batched kernel."""
    if not triton_available():
        pytest.skip("needs Triton (the batched kernel)")
    from vidflow.ops import _color_triton

    calls = {"launch": 0, "launch_batch": 0}
    for name in calls:
        real = getattr(_color_triton, name)

        def wrapper(*a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(*a, **kw)
        monkeypatch.setattr(_color_triton, name, wrapper)
    return calls


@pytest.mark.parametrize("size", [(960, 544), (640, 640), (1920, 1080)])
def test_convert_batch_into_equals_convert_into(cuda_device, counted, size):
    frames = _frames(cuda_device)
    mux = Muxer(batch_size=8, size=size, keep_aspect=True)
    regions = [mux._region(f.info.width, f.info.height, *size) for f in frames]
    regions[2] = (0, 0, *size)                                     # one stretched to the whole slot
    out = torch.full((8, 3, size[1], size[0]), 7, dtype=torch.uint8, device=cuda_device)
    ref = out.clone()
    convert_batch_into(frames, out, regions)
    assert counted == {"launch": 0, "launch_batch": 1}
    _per_frame(frames, ref, regions)
    assert _same(out, ref)
    assert (out[len(frames):] == 7).all()                          # slots beyond the frames: untouched


def test_mixed_batch_batches_the_device_nv12_frames(cuda_device, counted):
    """RGB frames and frames on the CPU take convert_into; the device NV12 ones one launch."""
    frames = _frames(cuda_device, _SPECS[:3])
    rgb = torch.randint(0, 256, (720, 1280, 3), dtype=torch.uint8, device=cuda_device).permute(2, 0, 1)
    frames.insert(1, SourceFrame(FrameInfo(9, 0, 0.0, width=1280, height=720), rgb, "rgb"))
    cpu = frames[3]
    frames.append(SourceFrame(cpu.info, cpu.data.cpu(), "nv12", cpu.matrix, cpu.full_range))
    out = torch.zeros(len(frames), 3, 360, 640, dtype=torch.uint8, device=cuda_device)
    ref = out.clone()
    regions = [(0, 0, 640, 360)] * len(frames)
    convert_batch_into(frames, out, regions)
    assert counted == {"launch": 2, "launch_batch": 1}
    _per_frame(frames, ref, regions)
    assert _same(out, ref)


def test_convert_batch_into_does_not_synchronise(cuda_device, counted):
    frames = _frames(cuda_device)
    out = torch.empty(len(frames), 3, 544, 960, dtype=torch.uint8, device=cuda_device)
    convert_batch_into(frames, out)                                # compiles the kernel
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            convert_batch_into(frames, out)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = _per_frame(frames, torch.empty_like(out), [(0, 0, 960, 544)] * len(frames))
    assert _same(out, ref)


@pytest.mark.parametrize("keep_aspect", [True, False])
def test_muxer_assemble_equals_the_per_frame_loop(cuda_device, keep_aspect):
    released = []
    frames = [SourceFrame(f.info, f.data, f.format, f.matrix, f.full_range, release=lambda i=i: released.append(i))
              for i, f in enumerate(_frames(cuda_device))]
    mux = Muxer(batch_size=8, size=(960, 544), keep_aspect=keep_aspect, pool=1)
    for order in (frames, frames[::-1]):                           # the second batch reuses the pooled buffer
        batch = mux.assemble(order, cuda_device)
        ref = torch.zeros(len(order), 3, 544, 960, dtype=torch.uint8, device=cuda_device)
        regions = [mux._region(f.info.width, f.info.height, 960, 544) for f in order]
        _per_frame(order, ref, regions)
        assert _same(batch.images, ref)
        assert [i.source_id for i in batch.frames] == [f.info.source_id for f in order]
        assert [i.region for i in batch.frames] == [tuple(float(v) for v in r) for r in regions]
        del batch
    torch.cuda.synchronize()
    deadline = time.monotonic() + 5
    while len(released) < 2 * len(frames) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(released) == sorted(list(range(len(frames))) * 2)
