"""Colour conversion against FFmpeg's (PyAV's) own RGB, and convert_into / convert_batch_into on the CPU."""

from __future__ import annotations

import importlib
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidflow.batch import FrameInfo
from vidflow.ops.color import (
    convert_batch_into,
    convert_into,
    default_matrix,
    nv12_to_rgb,
    to_rgb,
    yuv_coefficients,
)
from vidflow.scenes import Scene
from vidflow.sources.base import SourceFrame
from vidflow.sources.decoders import stream_color


def _encode(path, w, h, *, colorspace=None, full=False, frames=2):
    """A tiny H.264 clip with the given colour tags (None = unspecified)."""
    scene = Scene(w, h, seed=3)
    pix = "yuvj420p" if full else "yuv420p"
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(30))
        st.width, st.height, st.pix_fmt = w, h, pix
        if colorspace:
            st.codec_context.colorspace = colorspace
        st.codec_context.color_range = 2 if full else 1
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(scene.render(i)[0], format="rgb24").reformat(format=pix)
            vf.pts = i
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    with av.open(str(path)) as f:
        st = f.streams.video[0]
        fr = next(f.decode(st))
        return st.codec_context, stream_color(st), fr


@pytest.mark.parametrize("colorspace, full, want", [
    (None, False, ("bt601", False)),       # unspecified: FFmpeg uses BT.601 even at 720 lines
    (1, False, ("bt709", False)),
    (6, False, ("bt601", False)),
    (1, True, ("bt709", True)),
    (None, True, ("bt601", True)),
])
def test_nv12_to_rgb_matches_pyav(tmp_path, colorspace, full, want):
    _, (matrix, full_range), fr = _encode(tmp_path / "c.mkv", 320, 720 if colorspace is None else 240,
                                          colorspace=colorspace, full=full)
    assert (matrix, full_range) == want
    ref = torch.from_numpy(fr.to_ndarray(format="rgb24")).permute(2, 0, 1)
    nv12 = torch.from_numpy(fr.reformat(format="nv12").to_ndarray())
    rgb = nv12_to_rgb(nv12, matrix=matrix, full_range=full_range)
    assert rgb.shape == ref.shape and rgb.dtype == torch.uint8
    diff = (rgb.int() - ref.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
    if (matrix, full_range) == ("bt601", False):
        assert torch.equal(rgb, ref)           # bit-exact with swscale


def test_padded_surface_is_cropped():
    rng = np.random.default_rng(0)
    h, w, hc, wc = 6, 10, 8, 16
    y = rng.integers(0, 256, (hc, wc), dtype=np.uint8)
    uv = rng.integers(0, 256, (hc // 2, wc), dtype=np.uint8)
    padded = torch.from_numpy(np.concatenate([y, uv]))
    tight = torch.from_numpy(np.concatenate([y[:h, :w], uv[:h // 2, :w]]))
    a = nv12_to_rgb(padded, width=w, height=h)
    b = nv12_to_rgb(tight)
    assert a.shape == (3, h, w) and torch.equal(a, b)
    frame = SourceFrame(FrameInfo(0, 0, 0.0, width=w, height=h), padded, "nv12")
    assert torch.equal(to_rgb(frame), b)
    with pytest.raises(ValueError, match="matrix"):
        nv12_to_rgb(tight, matrix="bt2020")
    with pytest.raises(ValueError, match="exceeds"):
        nv12_to_rgb(tight, width=w + 2, height=h)


def test_coefficients_and_default_matrix():
    assert yuv_coefficients("bt601", False) == (9539, 13075, 16525, -3209, -6660, 128)
    yc, *_, yoff = yuv_coefficients("bt709", True)
    assert (yc, yoff) == (8192, 0)
    assert default_matrix(1080) == "bt601" and default_matrix(480) == "bt601"
    assert default_matrix(1080, convention="hd") == "bt709" and default_matrix(576, convention="hd") == "bt601"
    with pytest.raises(ValueError, match="convention"):
        default_matrix(720, convention="x")


def _rgb_frame(h=90, w=160, seed=1):
    img = Scene(w, h, seed=seed).render(0)[0]
    data = torch.from_numpy(img).permute(2, 0, 1)            # HWC-strided view, as FileSource yields
    return SourceFrame(FrameInfo(0, 0, 0.0, width=w, height=h), data, "rgb")


def test_convert_into_rgb_same_size_and_scaled():
    f = _rgb_frame()
    out = torch.zeros(3, 90, 160, dtype=torch.uint8)
    assert convert_into(f, out) is out and torch.equal(out, f.data)
    batch = torch.zeros(2, 3, 64, 100, dtype=torch.uint8)
    view = batch[1, :, 5:50, 10:90]                            # a letterboxed region of a pooled batch
    convert_into(f, view)
    ref = F.interpolate(f.data[None].float(), size=(45, 80), mode="bilinear", align_corners=False)[0]
    assert (view.int() - ref.add(0.5).floor().int()).abs().max() == 0
    assert batch[0].sum() == 0 and batch[1, :, :5].sum() == 0 and batch[1, :, :, :10].sum() == 0
    with pytest.raises(ValueError, match="uint8"):
        convert_into(f, torch.zeros(3, 10, 10))


def test_convert_into_nv12_equals_to_rgb_then_scale(tmp_path):
    _, (matrix, full), fr = _encode(tmp_path / "n.mkv", 320, 240, colorspace=1)
    nv12 = torch.from_numpy(fr.reformat(format="nv12").to_ndarray())
    f = SourceFrame(FrameInfo(0, 0, 0.0, width=320, height=240), nv12, "nv12", matrix, full)
    out = torch.empty(3, 240, 320, dtype=torch.uint8)
    convert_into(f, out)
    assert torch.equal(out, nv12_to_rgb(nv12, matrix=matrix, full_range=full))
    small = torch.empty(3, 120, 160, dtype=torch.uint8)
    convert_into(f, small)
    ref = F.interpolate(out[None].float(), size=(120, 160), mode="bilinear", align_corners=False)[0]
    assert (small.int() - ref.add(0.5).floor().int()).abs().max() == 0


def test_triton_kernel_in_interpreter(tmp_path, monkeypatch):
    """The fused CUDA kernel's arithmetic, run by Triton's CPU interpreter (skipped without Triton)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from vidflow.ops import _color_triton
    kt = importlib.reload(_color_triton)
    try:
        _, (matrix, full), fr = _encode(tmp_path / "t.mkv", 64, 48, colorspace=1)
        nv12 = torch.from_numpy(fr.reformat(format="nv12").to_ndarray())
        ref = nv12_to_rgb(nv12, matrix=matrix, full_range=full)
        out = torch.empty(3, 48, 64, dtype=torch.uint8)
        kt.launch(nv12, True, yuv_coefficients(matrix, full), 64, 48, out)
        assert torch.equal(out, ref)
        small, small_ref = torch.empty(3, 20, 30, dtype=torch.uint8), torch.empty(3, 20, 30, dtype=torch.uint8)
        kt.launch(nv12, True, yuv_coefficients(matrix, full), 64, 48, small)
        convert_into(SourceFrame(FrameInfo(0, 0, 0.0), nv12, "nv12", matrix, full), small_ref)
        assert (small.int() - small_ref.int()).abs().max() <= 1
    finally:
        monkeypatch.delenv("TRITON_INTERPRET")
        importlib.reload(_color_triton)
    assert os.environ.get("TRITON_INTERPRET") is None


def _nv12(w, h, *, coded=None, pitch=None, seed=0):
    """Random NV12 ``[Hc*3//2, pitch]`` (sliced to ``Wc`` columns) for a displayed ``w x h``."""
    wc, hc = coded or (w, h)
    g = torch.Generator().manual_seed(seed)
    full = torch.randint(0, 256, (hc * 3 // 2, pitch or wc), dtype=torch.uint8, generator=g)
    return full[:, :wc]


# three NV12 frames of different sizes, matrices and ranges (one a padded surface with a wider
# pitch), their batch slots (not in order) and regions in a 40x24 batch image: down, same, up
_BATCH = [
    (_nv12(64, 48, seed=1), "bt709", False, 64, 48, 2, (0, 0, 40, 24)),
    (_nv12(30, 20, coded=(40, 32), pitch=56, seed=2), "bt601", True, 30, 20, 0, (5, 2, 35, 22)),
    (_nv12(16, 12, seed=3), "bt601", False, 16, 12, 1, (4, 0, 36, 24)),
]


def test_batched_triton_kernel_in_interpreter(monkeypatch):
    """One batched launch == one per-frame launch per frame, bit for bit (Triton's CPU
    interpreter; skipped without Triton)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from vidflow.ops import _color_triton
    kt = importlib.reload(_color_triton)
    try:
        out = torch.full((4, 3, 24, 40), 7, dtype=torch.uint8)
        ref = out.clone()
        items = []
        for data, matrix, full, w, h, slot, (x0, y0, x1, y1) in _BATCH:
            coeffs = yuv_coefficients(matrix, full)
            items.append((data, coeffs, w, h, slot, (x0, y0, x1, y1)))
            kt.launch(data, True, coeffs, w, h, ref[slot, :, y0:y1, x0:x1])
        kt.launch_batch(items, out)
        assert torch.equal(out, ref)
        assert (out[3] == 7).all() and (out[0, :, :2] == 7).all()     # outside the regions: untouched
    finally:
        monkeypatch.delenv("TRITON_INTERPRET")
        importlib.reload(_color_triton)
    assert os.environ.get("TRITON_INTERPRET") is None


def test_convert_batch_into_on_cpu_equals_convert_into():
    """Off CUDA every frame takes convert_into (NV12 and RGB alike), into its own slot and region."""
    frames = [SourceFrame(FrameInfo(0, 0, 0.0, width=w, height=h), data, "nv12", matrix, full)
              for data, matrix, full, w, h, _, _ in _BATCH]
    frames.insert(1, _rgb_frame(45, 80))
    regions = [(0, 0, 40, 24), (0, 2, 40, 22), (5, 2, 35, 22), (4, 0, 36, 24)]
    out = torch.full((5, 3, 24, 40), 7, dtype=torch.uint8)
    ref = out.clone()
    assert convert_batch_into(frames, out, regions) is out
    for i, (f, (x0, y0, x1, y1)) in enumerate(zip(frames, regions)):
        convert_into(f, ref[i, :, y0:y1, x0:x1])
    assert torch.equal(out, ref) and (out[4] == 7).all()
    whole = torch.empty(4, 3, 24, 40, dtype=torch.uint8)
    convert_batch_into(frames, whole)                          # default region: the whole slot
    for i, f in enumerate(frames):
        convert_into(f, ref[i])
    assert torch.equal(whole, ref[:4])
    with pytest.raises(ValueError, match="outside"):
        convert_batch_into(frames[:1], out, [(0, 0, 41, 24)])
    with pytest.raises(ValueError, match="regions"):
        convert_batch_into(frames, out, regions[:2])
    with pytest.raises(ValueError, match="uint8"):
        convert_batch_into(frames, out[:2])
