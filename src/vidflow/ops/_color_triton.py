"""The fused convert + scale kernels behind :func:`vidflow.ops.color.convert_into` and
:func:`vidflow.ops.color.convert_batch_into` (Triton).

Imported only when Triton is importable. One program handles ``BLOCK`` output pixels: for each it
finds the four bilinear source taps (half-pixel centres, edges clamped, like
``F.interpolate(align_corners=False)``), converts each tap from NV12 with swscale's fixed-point
arithmetic (or reads RGB), blends, rounds and writes the three planes of ``out``.
``convert_kernel`` does one frame; ``convert_batch_kernel`` does a whole batch of NV12 frames in
one launch, each frame's parameters read from a row of a small device table. Both run the same
inlined ``_convert_block``, so they give bit-identical results.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

__all__ = ["convert_kernel", "convert_batch_kernel", "launch", "launch_batch"]


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
def _convert_block(src, s_c, s_y, s_x, uv_row0, W, H,
                   dst, d_c, d_y, d_x, OW, OH, scale_x, scale_y,
                   yc, vr, ub, ug, vg, yoff, offs,
                   NV12: tl.constexpr):
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


@triton.jit
def convert_kernel(src, s_c, s_y, s_x, uv_row0, W, H,
                   dst, d_c, d_y, d_x, OW, OH, scale_x, scale_y,
                   yc, vr, ub, ug, vg, yoff,
                   NV12: tl.constexpr, BLOCK: tl.constexpr):
    """One frame (NV12 or RGB) -> ``dst`` ``[3, OH, OW]``; grid ``(cdiv(OW*OH, BLOCK),)``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    _convert_block(src, s_c, s_y, s_x, uv_row0, W, H, dst, d_c, d_y, d_x, OW, OH, scale_x, scale_y,
                   yc, vr, ub, ug, vg, yoff, offs, NV12=NV12)


# One row of convert_batch_kernel's int64 ``table`` per frame (column: value). (Not named
# "params": Triton's argument binder has a local of that name and refuses a kernel argument so called.)
#  0 NV12 surface address  1 row pitch (elements)  2 uv_row0 (first UV row = coded height)
#  3 displayed W  4 displayed H  5 batch slot  6 region x0  7 region y0  8 region OW  9 region OH
#  10, 11 scale_x, scale_y (W/OW, H/OH as float32 bits)  12-17 yuv_coefficients (yc vr ub ug vg yoff)
_NP = 18


@triton.jit
def convert_batch_kernel(table, dst, d_b, d_c, d_y, d_x, NP: tl.constexpr, BLOCK: tl.constexpr):
    """A batch of NV12 frames, each converted and scaled into its own region of ``dst``
    ``[B, 3, H, W]``, in one launch.

    Grid ``(cdiv(max region pixels, BLOCK), n_frames)``: axis 1 picks the frame, whose row of
    ``table`` (layout above ``_NP``) gives its source address and crop, the slot and region it
    fills (``dst[slot, :, y0:y0+OH, x0:x0+OW]``), its scale factors and its colour coefficients,
    so frames of one batch may differ in size, matrix and range. Axis 0 walks the region's pixels
    ``BLOCK`` at a time (programs past a smaller region's end are fully masked). The per-pixel
    work is ``_convert_block``, exactly what ``convert_kernel`` runs with ``NV12=True``.
    """
    p = table + tl.program_id(1) * NP
    src = tl.load(p).to(tl.pointer_type(tl.uint8))
    pitch = tl.load(p + 1).to(tl.int32)
    uv_row0 = tl.load(p + 2).to(tl.int32)
    W = tl.load(p + 3).to(tl.int32)
    H = tl.load(p + 4).to(tl.int32)
    # slot and region origin stay int64: a [B,3,H,W] batch may pass 2**31 elements
    out = dst + tl.load(p + 5) * d_b + tl.load(p + 7) * d_y + tl.load(p + 6) * d_x
    OW = tl.load(p + 8).to(tl.int32)
    OH = tl.load(p + 9).to(tl.int32)
    scale_x = tl.load(p + 10).to(tl.int32).to(tl.float32, bitcast=True)
    scale_y = tl.load(p + 11).to(tl.int32).to(tl.float32, bitcast=True)
    yc = tl.load(p + 12).to(tl.int32)
    vr = tl.load(p + 13).to(tl.int32)
    ub = tl.load(p + 14).to(tl.int32)
    ug = tl.load(p + 15).to(tl.int32)
    vg = tl.load(p + 16).to(tl.int32)
    yoff = tl.load(p + 17).to(tl.int32)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    _convert_block(src, 0, pitch, 1, uv_row0, W, H, out, d_c, d_y, d_x, OW, OH, scale_x, scale_y,
                   yc, vr, ub, ug, vg, yoff, offs, NV12=True)


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


def _f32_bits(x: float) -> int:
    """The bits of ``x`` rounded to float32 (as Triton rounds a float argument), as an int."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


def launch_batch(items, out: torch.Tensor) -> None:
    """Run ``convert_batch_kernel`` once on the current stream of ``out``'s device.

    ``items``: per frame ``(data, coeffs, w, h, slot, (x0, y0, x1, y1))``: an NV12 surface
    ``[Hc*3//2, Wc]`` with unit column stride on ``out``'s device, cropped to ``w x h``, converted
    with ``coeffs`` (:func:`~vidflow.ops.color.yuv_coefficients`) and scaled into
    ``out[slot, :, y0:y1, x0:x1]`` (``out``: uint8 ``[B, 3, H, W]``, any strides). The caller
    validates; the caller also keeps the surfaces alive (``record_stream``).

    The parameter table goes to the device with a non-blocking copy from pinned memory taken
    from PyTorch's caching host allocator, which records an event on the block for that copy and
    hands the block out again only once the event has completed: the staging buffer outlives the
    copy without any device synchronisation here.
    """
    rows, most = [], 0
    for data, coeffs, w, h, slot, (x0, y0, x1, y1) in items:
        ow, oh = x1 - x0, y1 - y0
        rows.append([data.data_ptr(), data.stride(0), data.shape[0] * 2 // 3, w, h, slot, x0, y0, ow, oh,
                     _f32_bits(float(w) / ow), _f32_bits(float(h) / oh), *coeffs])
        most = max(most, ow * oh)
    if not rows:
        return
    params = torch.tensor(rows, dtype=torch.int64)
    grid = (triton.cdiv(most, _BLOCK), len(rows))
    with torch.cuda.device(out.device) if out.is_cuda else _nullctx():
        if out.is_cuda:
            params = params.pin_memory().to(out.device, non_blocking=True)
        convert_batch_kernel[grid](params, out, *out.stride(), NP=_NP, BLOCK=_BLOCK)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
