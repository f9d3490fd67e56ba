"""vidflow's demo embedder: a small CNN mapping a 64x64 object crop to a 64-d unit vector.

Trained by ``scripts/train_embedder.py`` on crops of ``vidflow.scenes`` objects (an identity is
one object: its shape and colour), with a supervised contrastive loss, so that crops of the same
object (other frames, positions, backgrounds, partial occlusion, box jitter) lie close in cosine
similarity and different objects far apart. ~97 k parameters (0.4 MB of float32 weights at
``vidflow/models/demo_embedder.pt``, loaded with ``torch.load(weights_only=True)``; training
figures in ``demo_embedder.json``).

Input: ``[N,3,64,64]`` float RGB in ``[0, 1]``; output ``[N,64]`` L2-normalised float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["DemoEmbedder", "load_demo_embedder", "INPUT_SIZE", "EMBED_DIM", "WEIGHTS"]

INPUT_SIZE = (64, 64)  # (w, h)
EMBED_DIM = 64
WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "demo_embedder.pt"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DemoEmbedder(nn.Module):
    """``[N,3,64,64]`` float in [0,1] -> ``[N, EMBED_DIM]`` unit vectors (any input size works;
    features are pooled globally). Mean and max pooling are both kept: the mean carries the
    object's colour, the max its strongest shape responses."""

    def __init__(self, dim: int = EMBED_DIM, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width))
        self.head = nn.Sequential(nn.Linear(8 * width + 3, 128), nn.ReLU(inplace=True), nn.Linear(128, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - 0.5
        # the crop's centre colour is a strong identity cue: give it to the head directly
        h, w = x.shape[2], x.shape[3]
        centre = x[:, :, h // 3: h - h // 3, w // 3: w - w // 3].mean((2, 3))
        f = self.features(x)
        z = torch.cat([f.mean((2, 3)), f.amax((2, 3)), centre], 1)
        return nn.functional.normalize(self.head(z), dim=1)


def load_demo_embedder(path: str | os.PathLike | None = None) -> DemoEmbedder:
    """The trained demo embedder (eval mode, CPU). ``path`` defaults to the packaged weights."""
    p = Path(path) if path is not None else WEIGHTS
    if not p.is_file():
        raise FileNotFoundError(f"demo embedder weights not found: {p} (train them with scripts/train_embedder.py)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    model = DemoEmbedder(dim=int(state.pop("_dim", torch.tensor(EMBED_DIM))), width=int(state.pop("_width", torch.tensor(16))))
    model.load_state_dict(state)
    return model.eval()
