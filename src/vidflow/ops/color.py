"""Colour conversion: NV12 -> RGB as FFmpeg does it, and the muxer's convert-and-scale op.

FFmpeg's swscale (what PyAV's ``frame.to_ndarray(format="rgb24")`` runs) converts 4:2:0 YUV to
RGB with nearest chroma (each chroma sample covers its 2x2 pixels) and 16-bit fixed-point
arithmetic: every term is rounded down separately. :func:`nv12_to_rgb` does the same integer
arithmetic, so on the same YUV planes it matches PyAV's RGB to within 1 LSB (bit-exact for
BT.601 limited range). Matrix and range come from the stream's metadata; a stream that does not
say uses BT.601 limited range, which is what FFmpeg does at any resolution (see
:func:`default_matrix`).

On CUDA, :func:`convert_into` converts and bilinearly scales a frame into a view of the muxer's
batch in ONE kernel (Triton, when importable; set ``VIDFLOW_NO_TRITON=1`` to force the plain
torch path, which launches ~20 small kernels per frame); :func:`convert_batch_into` does all the
NV12 frames of a batch in one kernel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..frame import SourceFrame

__all__ = ["default_matrix", "nv12_to_rgb", "to_rgb", "convert_into", "convert_batch_into", "yuv_coefficients",
           "triton_available"]

Matrix = Literal["bt601", "bt709"]
_MATRICES = ("bt601", "bt709")
# swscale's ff_yuv2rgb_coeffs (16.16 fixed point, for limited-range chroma): crv, cbu, cgu, cgv
_SWS = {"bt709": (117504, 138453, 13954, 34903), "bt601": (104597, 132201, 25675, 53279)}


def default_matrix(height: int, *, convention: Literal["ffmpeg", "hd"] = "ffmpeg") -> Matrix:
    """The matrix for a stream whose metadata does not name one.

    ``convention="ffmpeg"`` (default, what PyAV/FFmpeg and therefore vidflow's CPU path do):
    BT.601 at every size. ``convention="hd"``: BT.709 from 720 lines up, BT.601 below (what many
    players assume)."""
    if convention == "ffmpeg":
        return "bt601"
    if convention == "hd":
        return "bt709" if height >= 720 else "bt601"
    raise ValueError(f"default_matrix: convention must be 'ffmpeg' or 'hd', got {convention!r}")


def _check_matrix(matrix: str) -> None:
    if matrix not in _MATRICES:
        raise ValueError(f"matrix must be one of {_MATRICES}, got {matrix!r}")


def _tdiv(a: int, b: int) -> int:          # C integer division (truncates toward zero)
    q = abs(a) // b
    return q if a >= 0 else -q


@functools.lru_cache(maxsize=16)          # pure; called per frame by the muxer
def yuv_coefficients(matrix: Matrix = "bt601", full_range: bool = False) -> tuple[int, int, int, int, int, int]:
    """swscale's fixed-point YUV->RGB coefficients ``(y, v->r, u->b, u->g, v->g, y_offset*8)``.

    ``R = ((Y*8 - yoff) * y >> 16) + ((V*8 - 1024) * vr >> 16)``, likewise G (two chroma terms)
    and B, each ``>>`` rounding down, then clamped to 0..255."""
    _check_matrix(matrix)
    crv, cbu, cgu, cgv = _SWS[matrix]
    cgu, cgv = -cgu, -cgv
    if full_range:
        cy, oy = 1 << 16, 0
        crv, cbu, cgu, cgv = (_tdiv(c * 224, 255) for c in (crv, cbu, cgu, cgv))
    else:
        cy, oy = (65536 * 255) // 219, 16

    def r16(c: int) -> int:                # roundToInt16(c * (1 << 13) / (1 << 16))
        return (c + 4) >> 3 if c >= 0 else -((-c + 3) >> 3)
    return r16(cy), r16(crv), r16(cbu), r16(cgu), r16(cgv), oy * 8


def _nv12_planes(nv12: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    if nv12.dtype != torch.uint8 or nv12.dim() != 2 or nv12.shape[0] % 3:
        raise ValueError(f"nv12: expected uint8 (H*3//2, W), got {tuple(nv12.shape)} {nv12.dtype}")
    coded_h = nv12.shape[0] * 2 // 3
    if not (0 < height <= coded_h and 0 < width <= nv12.shape[1]):
        raise ValueError(f"nv12: displayed size {width}x{height} exceeds the surface {nv12.shape[1]}x{coded_h}")
    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = nv12[:height, :width]
    uv = nv12[coded_h:coded_h + ch, :2 * cw].unflatten(1, (cw, 2))
    return y, uv


def nv12_to_rgb(nv12: torch.Tensor, *, matrix: Matrix = "bt601", full_range: bool = False,
                width: int | None = None, height: int | None = None) -> torch.Tensor:
    """NV12 ``[Hc*3//2, Wc]`` uint8 (Y plane, then interleaved UV) -> RGB ``[3, H, W]`` uint8 on
    the same device, as FFmpeg converts. ``width``/``height`` crop to the displayed size when the
    surface is padded (default: the whole surface)."""
    _check_matrix(matrix)
    h = height or nv12.shape[0] * 2 // 3
    w = width or nv12.shape[1]
    if nv12.is_cuda and triton_available():
        out = torch.empty(3, h, w, dtype=torch.uint8, device=nv12.device)
        _launch(nv12, "nv12", matrix, full_range, w, h, out)
        return out
    return _nv12_to_rgb_torch(nv12, matrix, full_range, w, h)


def _nv12_to_rgb_torch(nv12: torch.Tensor, matrix: str, full_range: bool, w: int, h: int) -> torch.Tensor:
    y, uv = _nv12_planes(nv12, w, h)
    yc, vr, ub, ug, vg, yoff = yuv_coefficients(matrix, full_range)
    uv = uv.to(torch.int32) * 8 - 1024
    u, v = uv[..., 0], uv[..., 1]
    chroma = torch.stack(((v * vr) >> 16, ((u * ug) >> 16) + ((v * vg) >> 16), (u * ub) >> 16))  # [3,ch,cw]
    chroma = chroma.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, :h, :w]
    luma = ((y.to(torch.int32) * 8 - yoff) * yc) >> 16
    return (chroma + luma).clamp_(0, 255).to(torch.uint8)


def to_rgb(frame: SourceFrame) -> torch.Tensor:
    """A frame's RGB ``[3, h, w]`` uint8 on its own device, cropped to ``info.width x
    info.height`` (the displayed size; 0 = the whole data). RGB data comes back as a view."""
    w, h = _display_size(frame)
    if frame.format == "rgb":
        return frame.data[:, :h, :w]
    return nv12_to_rgb(frame.data, matrix=frame.matrix, full_range=frame.full_range, width=w, height=h)


def _display_size(frame: SourceFrame) -> tuple[int, int]:
    d = frame.data
    full_w = d.shape[-1]
    full_h = d.shape[1] if frame.format == "rgb" else d.shape[0] * 2 // 3
    return (min(frame.info.width or full_w, full_w), min(frame.info.height or full_h, full_h))


def convert_into(frame: SourceFrame, out: torch.Tensor) -> torch.Tensor:
    """Convert ``frame`` to RGB and scale it (bilinear, half-pixel centres like
    ``F.interpolate(..., align_corners=False)``, no antialias) into ``out`` ``[3, oh, ow]`` uint8
    (any strides, e.g. a region of the muxer's pooled ``[B,3,H,W]`` batch). Frames on another
    device are moved to ``out.device`` first. On CUDA with Triton this is a single kernel on the
    current stream. Returns ``out``."""
    if out.dtype != torch.uint8 or out.dim() != 3 or out.shape[0] != 3:
        raise ValueError(f"convert_into: out must be uint8 (3, H, W), got {tuple(out.shape)} {out.dtype}")
    data = frame.data
    if data.device != out.device:
        data = data.to(out.device, non_blocking=True)
    elif data.is_cuda:
        # the decoder thread allocated it on its own stream: keep the memory until we are done
        data.record_stream(torch.cuda.current_stream(data.device))
    w, h = _display_size(frame)
    if out.is_cuda and triton_available():
        _launch(data, frame.format, frame.matrix, frame.full_range, w, h, out)
        return out
    src = frame if data is frame.data else SourceFrame(frame.info, data, frame.format, frame.matrix,
                                                       frame.full_range)
    rgb = to_rgb(src)
    oh, ow = out.shape[1], out.shape[2]
    if (oh, ow) == (h, w):
        out.copy_(rgb)
    else:
        x = F.interpolate(rgb[None].float(), size=(oh, ow), mode="bilinear", align_corners=False)[0]
        out.copy_(x.add_(0.5).floor_().clamp_(0, 255))
    return out


def convert_batch_into(frames: Sequence[SourceFrame], out: torch.Tensor,
                       regions: Sequence[tuple[int, int, int, int]] | None = None) -> torch.Tensor:
    """Convert and scale ``frames[i]`` into ``out[i, :, y0:y1, x0:x1]`` with ``(x0, y0, x1, y1) =
    regions[i]`` (default: the whole slot), as :func:`convert_into` does frame by frame, with the
    same results bit for bit. ``out``: uint8 ``[B, 3, H, W]``, ``B >= len(frames)``.

    On CUDA with Triton the NV12 frames already on ``out``'s device (unit column stride) go
    through ONE kernel launch; other frames (RGB, on the CPU or another device) take
    :func:`convert_into`. Returns ``out``."""
    if out.dtype != torch.uint8 or out.dim() != 4 or out.shape[1] != 3 or out.shape[0] < len(frames):
        raise ValueError(f"convert_batch_into: out must be uint8 (B>={len(frames)}, 3, H, W), "
                         f"got {tuple(out.shape)} {out.dtype}")
    oh, ow = int(out.shape[2]), int(out.shape[3])
    if regions is None:
        regions = [(0, 0, ow, oh)] * len(frames)
    if len(regions) != len(frames):
        raise ValueError(f"convert_batch_into: {len(frames)} frames but {len(regions)} regions")
    fused = out.is_cuda and triton_available()
    items = []
    for i, (f, reg) in enumerate(zip(frames, regions)):
        x0, y0, x1, y1 = (int(v) for v in reg)
        if not (0 <= x0 < x1 <= ow and 0 <= y0 < y1 <= oh):
            raise ValueError(f"convert_batch_into: region {tuple(reg)} is empty or outside {ow}x{oh}")
        d = f.data
        if fused and f.format == "nv12" and d.device == out.device and d.stride(1) == 1:
            _check_matrix(f.matrix)
            w, h = _display_size(f)
            _nv12_planes(d, w, h)                # validates
            # the decoder thread allocated it on its own stream: keep the memory until we are done
            d.record_stream(torch.cuda.current_stream(d.device))
            items.append((d, yuv_coefficients(f.matrix, f.full_range), w, h, i, (x0, y0, x1, y1)))
        else:
            convert_into(f, out[i, :, y0:y1, x0:x1])
    if items:
        from ._color_triton import launch_batch
        launch_batch(items, out)
    return out


# ---------------------------------------------------------------------------------------- Triton
_TRITON: object = None      # None = not tried yet, False = unavailable, else the jitted kernel


def triton_available() -> bool:
    """True when the fused Triton kernel can be used (``VIDFLOW_NO_TRITON=1`` turns it off)."""
    global _TRITON
    if _TRITON is None:
        _TRITON = False
        if os.environ.get("VIDFLOW_NO_TRITON", "") in ("", "0"):
            try:
                from ._color_triton import convert_kernel
                _TRITON = convert_kernel
            except Exception:               # ImportError, or a Triton without a usable backend
                _TRITON = False
    return _TRITON is not False


def _launch(data: torch.Tensor, fmt: str, matrix: str, full_range: bool, w: int, h: int,
            out: torch.Tensor) -> None:
    from ._color_triton import launch
    _check_matrix(matrix)
    if fmt == "nv12":
        _nv12_planes(data, w, h)            # validates
    launch(data, fmt == "nv12", yuv_coefficients(matrix, full_range), w, h, out)
