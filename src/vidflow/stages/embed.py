"""``Embedder``: an embedding model (ReID / face style) run on object crops.

Writes per object ``attrs["<name>.vector"]`` ``[N, D]`` float32, L2-normalised (all zeros where
the stage did not apply: class not in ``on``, box smaller than ``min_size``). ``model="demo"``
loads vidflow's own demo embedder (``vidflow.demo_models.embedder``; 64x64 crops, D = 64),
trained on the synthetic scenes to tell objects apart by shape and colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..batch import Batch
from ._secondary import CropStage, first_output

__all__ = ["Embedder"]


class Embedder(CropStage):
    """Embed each object's crop.

    Args:
        model: ``"demo"``, a model path (``vidflow.engines.load_engine``), an ``nn.Module`` or a
            callable ``Tensor[R,3,h,w] -> [R, D]`` (or a dict / tuple whose first tensor is that).
        size: crop size ``[w, h]`` (or an int); ``None`` = the demo model's size (64) or 128 x 128.
        on: detector classes (names in ``batch.labels["objects"]`` or ids) to embed; ``None`` = all.
        min_size: skip boxes whose width or height (source pixels) is below this.
        every: re-run a tracked object only every K frames and reuse its last vector in between.
        mean, std: input normalisation ``(x/255 - mean) / std``; ``None`` = the demo model's
            (it normalises inside: 0 / 1) or ImageNet's.
        crop: ``"box"`` (default) or ``"mask"``: pixels outside the object's instance mask
            (a segment detector's) are set to ``fill`` first (see ``stages._secondary``).
        fill: the value of those pixels, 0..255 (one value or R, G, B; default 114, grey).
        name: stage name, the attribute prefix.
    """

    def __init__(self, model: Any = "demo", *, size: Sequence[int] | int | None = None,
                 on: Sequence[str | int] | None = None, min_size: float = 0, every: int = 1,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 crop: Literal["box", "mask"] = "box", fill: float | Sequence[float] = 114.0,
                 name: str = "embed") -> None:
        demo = isinstance(model, str) and model == "demo"
        if demo:
            from ..demo_models.embedder import INPUT_SIZE, load_demo_embedder

            model = load_demo_embedder()
            size = size if size is not None else INPUT_SIZE
        imagenet = not demo
        if mean is None:
            mean = (0.485, 0.456, 0.406) if imagenet else (0.0, 0.0, 0.0)
        if std is None:
            std = (0.229, 0.224, 0.225) if imagenet else (1.0, 1.0, 1.0)
        super().__init__(model, size=size if size is not None else 128, on=on, min_size=min_size, every=every,
                         mean=mean, std=std, name=name, kind="Embedder", crop=crop, fill=fill)

    def _post(self, out: Any) -> torch.Tensor:
        return torch.nn.functional.normalize(first_output(out).float().flatten(1), dim=1)

    def _write(self, batch: Batch, res: torch.Tensor, valid: torch.Tensor) -> Batch:
        vec = res * valid[:, None]
        return batch.replace(objects=batch.objects.with_attrs(**{f"{self.name}.vector": vec}))
