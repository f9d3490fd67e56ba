"""The fused convert + scale kernel behind :func:`vidflow.ops.color.convert_into` (Triton).

Imported only when Triton is importable. One program handles ``BLOCK`` output pixels: for each it
finds the four bilinear source taps (half-pixel centres, edges clamped, like
``F.interpolate(align_corners=False)``), converts each tap from NV12 with swscale's fixed-point
arithmetic (or reads RGB), blends, rounds and writes the three planes of ``out``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["convert_kernel", "launch"]


@triton.jit
def _yuv_tap(src, pitch, uv_row0, x, y, yc, vr, ub, ug, vg, yoff):
    luma = tl.load(src + y * pitch + x).to(tl.int32)
    uvp = src + (uv_row0 + y // 2) * pitch + (x // 2) * 2
    u = tl.load(uvp).to(tl.int32) * 8 - 1024
    v = tl.load(uvp + 1).to(tl.int32) * 8 - 1024
    yy = ((luma * 8 - yoff) * yc) >> 16
    r = yy + ((v * vr) >> 16)
    g = yy + ((u * ug) >> 16) + ((v * vg) >> 16)
    b = yy + ((u * ub) >> 16)
    r = tl.minimum(tl.maximum(r, 0), 255).to(tl.float32)
    g = tl.minimum(tl.maximum(g, 0), 255).to(tl.float32)
    b = tl.minimum(tl.maximum(b, 0), 255).to(tl.float32)
    return r, g, b


@triton.jit
def _rgb_tap(src, s_c, s_y, s_x, x, y):
    p = src + y * s_y + x * s_x
    return (tl.load(p).to(tl.float32), tl.load(p + s_c).to(tl.float32), tl.load(p + 2 * s_c).to(tl.float32))


@triton.jit
def convert_kernel(src, s_c, s_y, s_x, uv_row0, W, H,
                   dst, d_c, d_y, d_x, OW, OH, scale_x, scale_y,
                   yc, vr, ub, ug, vg, yoff,
                   NV12: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < OW * OH
    oy = offs // OW
    ox = offs - oy * OW
    sx = tl.maximum((ox.to(tl.float32) + 0.5) * scale_x - 0.5, 0.0)
    sy = tl.maximum((oy.to(tl.float32) + 0.5) * scale_y - 0.5, 0.0)
    x0 = tl.minimum(sx.to(tl.int32), W - 1)
    y0 = tl.minimum(sy.to(tl.int32), H - 1)
    fx = sx - x0.to(tl.float32)
    fy = sy - y0.to(tl.float32)
    x1 = tl.minimum(x0 + 1, W - 1)
    y1 = tl.minimum(y0 + 1, H - 1)
    # masked-off lanes read pixel (0, 0): always valid, never stored
    x0 = tl.where(mask, x0, 0)
    x1 = tl.where(mask, x1, 0)
    y0 = tl.where(mask, y0, 0)
    y1 = tl.where(mask, y1, 0)
    if NV12:
        r00, g00, b00 = _yuv_tap(src, s_y, uv_row0, x0, y0, yc, vr, ub, ug, vg, yoff)
        r01, g01, b01 = _yuv_tap(src, s_y, uv_row0, x1, y0, yc, vr, ub, ug, vg, yoff)
        r10, g10, b10 = _yuv_tap(src, s_y, uv_row0, x0, y1, yc, vr, ub, ug, vg, yoff)
        r11, g11, b11 = _yuv_tap(src, s_y, uv_row0, x1, y1, yc, vr, ub, ug, vg, yoff)
    else:
        r00, g00, b00 = _rgb_tap(src, s_c, s_y, s_x, x0, y0)
        r01, g01, b01 = _rgb_tap(src, s_c, s_y, s_x, x1, y0)
        r10, g10, b10 = _rgb_tap(src, s_c, s_y, s_x, x0, y1)
        r11, g11, b11 = _rgb_tap(src, s_c, s_y, s_x, x1, y1)
    w00 = (1.0 - fx) * (1.0 - fy)
    w01 = fx * (1.0 - fy)
    w10 = (1.0 - fx) * fy
    w11 = fx * fy
    r = r00 * w00 + r01 * w01 + r10 * w10 + r11 * w11
    g = g00 * w00 + g01 * w01 + g10 * w10 + g11 * w11
    b = b00 * w00 + b01 * w01 + b10 * w10 + b11 * w11
    o = dst + oy * d_y + ox * d_x
    tl.store(o, tl.minimum(tl.maximum(tl.floor(r + 0.5), 0.0), 255.0).to(tl.uint8), mask=mask)
    tl.store(o + d_c, tl.minimum(tl.maximum(tl.floor(g + 0.5), 0.0), 255.0).to(tl.uint8), mask=mask)
    tl.store(o + 2 * d_c, tl.minimum(tl.maximum(tl.floor(b + 0.5), 0.0), 255.0).to(tl.uint8), mask=mask)


_BLOCK = 512


def launch(data: torch.Tensor, nv12: bool, coeffs: tuple, w: int, h: int, out: torch.Tensor) -> None:
    """Run the kernel on the current stream: ``data`` (NV12 ``[Hc*3//2, Wc]`` with unit column
    stride, or RGB ``[3, H, W]`` any strides) cropped to ``w x h`` -> ``out`` ``[3, oh, ow]``."""
    oh, ow = int(out.shape[1]), int(out.shape[2])
    if nv12:
        if data.stride(1) != 1:
            data = data.contiguous()
        s_c, s_y, s_x = 0, data.stride(0), 1
        uv_row0 = data.shape[0] * 2 // 3
    else:
        s_c, s_y, s_x = data.stride()
        uv_row0 = 0
    grid = (triton.cdiv(ow * oh, _BLOCK),)
    with torch.cuda.device(out.device) if out.is_cuda else _nullctx():
        convert_kernel[grid](data, s_c, s_y, s_x, uv_row0, w, h,
                             out, out.stride(0), out.stride(1), out.stride(2), ow, oh,
                             float(w) / ow, float(h) / oh, *coeffs, NV12=nv12, BLOCK=_BLOCK)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
