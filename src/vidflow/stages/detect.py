"""``Detector``: the object-detection stage (YAML ``detect:``).

Per batch: letterbox/resize the batch images to the model input on the device (one call),
run the engine, decode the raw output with a YOLO-family head, map boxes back to **source**
pixels through the letterbox placement and each frame's ``region``, clip them to the source
frame, and put them in ``batch.objects`` (replacing the table; ``object_id`` = -1).

``batch.labels["objects"]`` gets the class names. With ``keep_input`` / ``keep_output`` the
preprocessed input ``"<name>.input" [B,3,H,W]`` and every raw output ``"<name>.<output>"``
go into ``batch.tensors`` as they are (no copy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..batch import Batch, Objects
from ..engines.base import size_from
from ..heads.yolo import FORMATS, decode
from ..ops.geometry import clip_boxes, input_to_image, preprocess

__all__ = ["Detector"]

DEMO = "demo"


class Detector:
    """Run a YOLO-family detector on every batch.

    ``model``: ``"demo"`` (vidflow's own shapes detector), a path (``.onnx``, ``.torchscript``),
    an ``nn.Module`` or an engine. ``format``: ``"yolov8"`` (``[B,4+C,N]``, also YOLO11),
    ``"yolov5"`` (``[B,N,5+C]``), ``"end2end"`` (``[B,N,6]``). ``size=(W, H)`` of the model input
    (default: the model's metadata, else 640x640). ``conf``: a float or one value per class.
    ``labels``: class names (default: the model's metadata). ``half``: float16 on CUDA.
    ``color``: channel order the model expects. ``letterbox=False`` resizes without keeping the
    aspect ratio. ``classes``: keep only these class ids. ``mean``/``std``: optional
    normalisation after scaling to 0..1. ``output``: which output to decode (default: the first).
    """

    def __init__(self, model: Any = DEMO, *, format: Literal["yolov8", "yolov5", "end2end"] | None = None,
                 size: Sequence[int] | int | None = None, conf: float | Sequence[float] = 0.25,
                 iou: float = 0.7, max_det: int = 300, labels: Sequence[str] | None = None, half: bool = False,
                 color: Literal["rgb", "bgr"] = "rgb", letterbox: bool = True, keep_input: bool = False,
                 keep_output: bool = False, classes: Sequence[int] | None = None, agnostic: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 output: str | None = None, backend: Literal["auto", "onnxruntime", "torch"] = "auto",
                 name: str = "detect") -> None:
        if format is not None and format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color: expected 'rgb' or 'bgr', got {color!r}")
        if backend not in ("auto", "onnxruntime", "torch"):
            raise ValueError(f"backend: expected 'auto', 'onnxruntime' or 'torch', got {backend!r}")
        if not 0.0 <= float(iou) <= 1.0:
            raise ValueError(f"iou: expected a value in [0, 1], got {iou}")
        if int(max_det) < 1:
            raise ValueError(f"max_det: expected >= 1, got {max_det}")
        if isinstance(conf, (int, float)):
            if not 0.0 <= float(conf) <= 1.0:
                raise ValueError(f"conf: expected a value in [0, 1] or one per class, got {conf}")
        else:
            conf = tuple(float(c) for c in conf)
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"size: expected [width, height] or an int, got {size!r}")
        if isinstance(model, (str, os.PathLike)) and os.fspath(model) != DEMO and not os.path.isfile(model):
            raise ValueError(f"model: file not found: {os.fspath(model)!r} (or use model: demo)")
        self.model = model
        self.format = format
        self.size = size
        self.conf = conf
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.labels = tuple(labels) if labels is not None else None
        self.half = bool(half)
        self.color = color
        self.letterbox = bool(letterbox)
        self.keep_input = bool(keep_input)
        self.keep_output = bool(keep_output)
        self.classes = tuple(int(c) for c in classes) if classes is not None else None
        self.agnostic = bool(agnostic)
        self.mean, self.std = mean, std
        self.output = output
        self.backend = backend
        self.name = name
        self.engine: Any = None
        self._device: torch.device | None = None

    # lazy set-up on the batch's device ------------------------------------------------------
    def _load(self, device: torch.device) -> None:
        from ..engines import load_engine

        meta: dict[str, Any] = {}
        model = self.model
        if isinstance(model, str) and model == DEMO:
            from ..demo_models import load_demo
            model, meta = load_demo(device=device)
        kw: dict[str, Any] = {}
        if isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".onnx"):
            kw["backend"] = self.backend
        self.engine = load_engine(model, device=device, half=self.half, **kw)
        self._device = device
        md = {**getattr(self.engine, "metadata", {}), **meta}
        self._size = self.size or getattr(self.engine, "input_size", None) or size_from(md) or (640, 640)
        self._format = self.format or md.get("format") or "yolov8"
        self._labels = self.labels or getattr(self.engine, "labels", None) or (tuple(md["labels"]) if md.get("labels") else None)

    def __call__(self, batch: Batch) -> Batch:
        """``batch`` -> a new batch with ``objects`` from this detector (input not modified)."""
        return self.finish(self.launch(batch))

    def launch(self, batch: Batch) -> tuple:
        """The first half: letterbox and queue the model on the device, without waiting for it.
        Returns what :meth:`finish` needs. (An overlapping ``Pipeline`` calls ``launch`` on its
        main thread and ``finish`` on its tail thread, so the model of batch i+1 runs on the GPU
        while batch i is decoded, tracked and written.)"""
        if self.engine is None or self._device != batch.device:
            self._load(batch.device)
        dtype = getattr(self.engine, "input_dtype", torch.float32)
        x, place = preprocess(batch.images, self._size, mode="letterbox" if self.letterbox else "resize",
                              color=self.color, mean=self.mean, std=self.std, dtype=dtype)
        return batch, x, place, self.engine(x)

    def finish(self, pending: tuple) -> Batch:
        """The second half: decode the model's output (YOLO head, NMS), map boxes to source pixels."""
        batch, x, place, outs = pending
        if x.is_cuda:                 # made on the launching thread's stream, read on this one
            cur = torch.cuda.current_stream(x.device)
            for t in (x, *outs.values()):
                t.record_stream(cur)
        key = self.output or next(iter(outs))
        if key not in outs:
            raise ValueError(f"output: {key!r} is not an output of the model; it has {list(outs)}")
        raw = outs[key]
        det = decode(raw, format=self._format, conf=self.conf, iou=self.iou, max_det=self.max_det,
                     classes=self.classes, agnostic=self.agnostic)
        boxes = batch.image_to_source(input_to_image(det.bbox, place), det.frame_idx)
        boxes = clip_boxes(boxes, batch.source_sizes()[det.frame_idx])
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        objs = Objects.create(frame_idx=det.frame_idx, bbox=boxes, confidence=det.confidence,
                              class_id=det.class_id)[ok]
        labels = self._labels or _default_labels(raw, self._format)
        tensors = dict(batch.tensors)
        if self.keep_input:
            tensors[f"{self.name}.input"] = x
        if self.keep_output:
            tensors.update({f"{self.name}.{k}": v for k, v in outs.items()})
        return batch.replace(objects=objs, tensors=tensors, labels={**batch.labels, "objects": labels})

    def warmup(self, batch_size: int, device: torch.device) -> None:
        """Prepare the engine for every batch size up to ``batch_size`` (``Pipeline`` calls this
        on CUDA before the sources start: cuDNN autotuning and CUDA graph capture happen now, not
        on the first batch of each size)."""
        if self.engine is None or self._device != device:
            self._load(device)
        warm = getattr(self.engine, "warmup", None)
        if callable(warm):
            w, h = self._size
            warm(batch_size, (3, h, w))

    def close(self) -> None:
        self.engine = None

    def __repr__(self) -> str:
        m = self.model if isinstance(self.model, (str, os.PathLike)) else type(self.model).__name__
        return f"Detector(model={m!r}, format={self.format}, conf={self.conf}, iou={self.iou}, name={self.name!r})"


def _default_labels(raw: torch.Tensor, fmt: str) -> tuple[str, ...]:
    n = raw.shape[1] - 4 if fmt == "yolov8" else raw.shape[2] - 5 if fmt == "yolov5" else 0
    return tuple(str(i) for i in range(max(n, 0)))
