"""``Classifier``: a classification model run on object crops (DeepStream's secondary GIE).

Writes per object ``attrs["<name>.label"]`` ``[N]`` int64 (index into ``batch.labels[name]``,
-1 where the stage did not apply: class not in ``on``, box smaller than ``min_size``) and
``attrs["<name>.confidence"]`` ``[N]`` float32 (the top probability, 0 where not applied).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..batch import Batch
from ._secondary import CropStage, first_output

__all__ = ["Classifier"]


class Classifier(CropStage):
    """Classify each object's crop.

    Args:
        model: a model path (``vidflow.engines.load_engine``), an ``nn.Module`` or a callable
            ``Tensor[R,3,h,w] -> logits [R,C]`` (or a dict / tuple whose first tensor is that).
        size: crop size ``[w, h]`` (or an int) fed to the model.
        labels: class names of the model's outputs (``batch.labels[name]``); defaults to the
            engine's labels, else ``"0", "1", ...``.
        on: detector classes (names in ``batch.labels["objects"]`` or ids) to classify; ``None`` = all.
        min_size: skip boxes whose width or height (source pixels) is below this.
        every: re-run a tracked object only every K frames and reuse its last result in between.
        mean, std: input normalisation, ``(x/255 - mean) / std`` per RGB channel.
        activation: ``"softmax"`` (logits), ``"sigmoid"`` (independent scores) or ``"none"``
            (the model already outputs probabilities).
        crop: ``"box"`` (default) or ``"mask"``: pixels outside the object's instance mask
            (a segment detector's) are set to ``fill`` first (see ``stages._secondary``).
        fill: the value of those pixels, 0..255 (one value or R, G, B; default 114, grey).
        name: stage name, the attribute prefix.
    """

    def __init__(self, model: Any = None, *, size: Sequence[int] | int = (64, 64),
                 labels: Sequence[str] | None = None, on: Sequence[str | int] | None = None,
                 min_size: float = 0, every: int = 1, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0),
                 activation: Literal["softmax", "sigmoid", "none"] = "softmax", crop: Literal["box", "mask"] = "box",
                 fill: float | Sequence[float] = 114.0, name: str = "classify") -> None:
        super().__init__(model, size=size, on=on, min_size=min_size, every=every, mean=mean, std=std,
                         name=name, kind="Classifier", crop=crop, fill=fill)
        if activation not in ("softmax", "sigmoid", "none"):
            raise ValueError(f"Classifier: activation must be one of 'softmax', 'sigmoid', 'none', got {activation!r}")
        self.activation = activation
        self.labels = None if labels is None else tuple(str(v) for v in labels)

    def _prepare(self, batch: Batch) -> None:
        if self.labels is None:
            eng = getattr(self._engine, "labels", None)
            self.labels = tuple(eng) if eng else None

    def _post(self, out: Any) -> torch.Tensor:
        logits = first_output(out).float().flatten(1)
        if self.activation == "softmax":
            p = logits.softmax(1)
        elif self.activation == "sigmoid":
            p = logits.sigmoid()
        else:
            p = logits
        if self.labels is None:
            self.labels = tuple(str(i) for i in range(p.shape[1]))
        elif len(self.labels) != p.shape[1]:
            raise ValueError(f"Classifier {self.name!r}: the model gives {p.shape[1]} classes but "
                             f"{len(self.labels)} labels were given")
        conf, label = p.max(1)
        return torch.stack([label.float(), conf], 1)  # [R,2]

    def _write(self, batch: Batch, res: torch.Tensor, valid: torch.Tensor) -> Batch:
        label = torch.where(valid, res[:, 0].round().long(), torch.full_like(valid, -1, dtype=torch.int64))
        conf = torch.where(valid, res[:, 1], torch.zeros_like(res[:, 1]))
        objs = batch.objects.with_attrs(**{f"{self.name}.label": label, f"{self.name}.confidence": conf})
        return batch.replace(objects=objs, labels={**batch.labels, self.name: self.labels or ()})
