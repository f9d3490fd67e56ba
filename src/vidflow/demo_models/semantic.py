"""vidflow's demo semantic-segmentation model: a small fully convolutional net that labels every
pixel of a shapes scene as background, box, disc or triangle.

Trained by ``scripts/train_semantic.py`` on ``vidflow.scenes`` frames; weights are a plain
state dict (``vidflow/models/demo_semantic.pt``, loaded with ``torch.load(weights_only=True)``,
no pickled code); facts and training figures in ``demo_semantic.json``.

Input ``[B,3,H,W]`` float RGB in ``[0, 1]`` (letterboxed, H and W multiples of 8); output
``[B, 4, H/4, W/4]`` class logits (``head: semantic``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch
from torch import nn

__all__ = ["DemoSemantic", "load_demo_semantic", "CLASSES"]

CLASSES = ("background", "box", "disc", "triangle")
WEIGHTS, INFO = "demo_semantic.pt", "demo_semantic.json"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DemoSemantic(nn.Module):
    def __init__(self, num_classes: int = len(CLASSES), width: int = 12) -> None:
        super().__init__()
        w = width
        self.s4 = nn.Sequential(_block(3, w, 2), _block(w, w, 1), _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1))
        self.s8 = nn.Sequential(_block(2 * w, 3 * w, 2), _block(3 * w, 3 * w, 1))
        self.s16 = nn.Sequential(_block(3 * w, 4 * w, 2), _block(4 * w, 4 * w, 1), _block(4 * w, 4 * w, 1))
        self.fuse = nn.Sequential(_block(2 * w + 3 * w + 4 * w, 2 * w, 1), nn.Conv2d(2 * w, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.s4(x)
        b = self.s8(a)
        c = self.s16(b)
        up = nn.functional.interpolate
        size = a.shape[2:]
        f = torch.cat([a, up(b, size=size, mode="bilinear", align_corners=False),
                       up(c, size=size, mode="bilinear", align_corners=False)], 1)
        return self.fuse(f)


def load_demo_semantic(*, device: torch.device | str = "cpu") -> tuple[DemoSemantic, dict[str, Any]]:
    """The trained model (eval, on ``device``) and its info dict (``labels``, ``input_size``,
    ``task: semantic``)."""
    root = resources.files("vidflow") / "models"
    info = json.loads((root / INFO).read_text())
    with resources.as_file(root / WEIGHTS) as p:
        state = torch.load(p, map_location="cpu", weights_only=True)
    model = DemoSemantic(num_classes=len(info["labels"]), width=int(info.get("width", 12)))
    model.load_state_dict(state)
    return model.to(device).eval(), info
