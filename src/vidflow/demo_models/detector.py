"""vidflow's demo detector: a small anchor-free CNN for the synthetic "shapes" scenes.

Input ``[B,3,H,W]`` float, RGB 0..1, letterboxed (H, W multiples of 32; trained at 320x320).
Output ``[B, 4+C, N]`` in the Ultralytics YOLOv8 layout, so ``heads.yolo.decode(format="yolov8")``
reads it: rows 0-3 are box centre x, centre y, width, height in input pixels, rows 4.. the
sigmoid class scores; ``N = (H/8) * (W/8)`` anchor points (one per stride-8 cell).

Backbone: 4 stride-2 stages (16-32-64-128-128 channels, conv-BN-SiLU), a two-level top-down
FPN back to stride 8, and one head that predicts, per cell, the distances from the cell centre
to the four box sides (softplus x stride) and C class logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DemoDetector", "STRIDE"]

STRIDE = 8


class _Conv(nn.Sequential):
    def __init__(self, c1: int, c2: int, s: int = 1, k: int = 3) -> None:
        super().__init__(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU(inplace=True))


class DemoDetector(nn.Module):
    """``DemoDetector(num_classes=3)(x [B,3,H,W]) -> [B, 4+num_classes, H/8 * W/8]``.

    In training mode ``forward`` also returns the raw pieces: ``(out, ltrb [B,N,4] input px,
    logits [B,N,C], anchors [N,2])``."""

    def __init__(self, num_classes: int = 3, width: int = 1) -> None:
        super().__init__()
        c = [16 * width, 32 * width, 64 * width, 128 * width]
        self.num_classes = num_classes
        self.stem = nn.Sequential(_Conv(3, c[0], 2), _Conv(c[0], c[1], 2), _Conv(c[1], c[1]))      # /4
        self.p3 = nn.Sequential(_Conv(c[1], c[2], 2), _Conv(c[2], c[2]), _Conv(c[2], c[2]))       # /8
        self.p4 = nn.Sequential(_Conv(c[2], c[3], 2), _Conv(c[3], c[3]), _Conv(c[3], c[3]))       # /16
        self.p5 = nn.Sequential(_Conv(c[3], c[3], 2), _Conv(c[3], c[3]))                          # /32
        self.lat4 = _Conv(c[3] * 2, c[3], k=1)
        self.fuse4 = _Conv(c[3], c[3])
        self.lat3 = _Conv(c[3] + c[2], c[2], k=1)
        self.fuse3 = _Conv(c[2], c[2])
        self.head = nn.Sequential(_Conv(c[2], c[2]), nn.Conv2d(c[2], 4 + num_classes, 1))
        with torch.no_grad():  # start with low scores (focal-loss prior 0.01)
            last = self.head[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            last.bias[4:].fill_(-4.6)

    def forward(self, x: torch.Tensor):
        f = self.stem(x)
        p3 = self.p3(f)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.fuse4(self.lat4(torch.cat([p4, F.interpolate(p5, size=p4.shape[2:], mode="nearest")], 1)))
        t3 = self.fuse3(self.lat3(torch.cat([p3, F.interpolate(t4, size=p3.shape[2:], mode="nearest")], 1)))
        y = self.head(t3)                                   # [B, 4+C, h, w]
        b, _, h, w = y.shape
        y = y.flatten(2)                                    # [B, 4+C, N]
        ys = (torch.arange(h, device=x.device, dtype=y.dtype) + 0.5) * STRIDE
        xs = (torch.arange(w, device=x.device, dtype=y.dtype) + 0.5) * STRIDE
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        anchors = torch.stack([gx.reshape(-1), gy.reshape(-1)], 0)      # [2, N]
        ltrb = F.softplus(y[:, :4]) * STRIDE                            # [B, 4, N]
        x1y1 = anchors - ltrb[:, :2]
        x2y2 = anchors + ltrb[:, 2:]
        out = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1, y[:, 4:].sigmoid()], 1)
        if self.training:
            return out, ltrb.transpose(1, 2), y[:, 4:].transpose(1, 2), anchors.t()
        return out
