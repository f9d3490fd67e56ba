"""``Detector``: the detection / segmentation / pose stage (YAML ``detect:``).

Per batch: letterbox/resize the batch images to the model input on the device (one call), run
the engine, decode the raw outputs of the **whole batch at once** with a head
(:mod:`vidflow.heads`), map boxes (and keypoints, masks) back to **source** pixels through the
letterbox placement and each frame's ``region``, clip them to the source frame, and put them in
``batch.objects`` (replacing the table; ``object_id`` = -1).

Heads: ``head="yolov8"`` (also YOLO11), ``"yolov5"``, ``"end2end"``, ``"segment"`` (masks in
``objects.masks``), ``"pose"`` (``objects.keypoints``), ``"semantic"`` (``batch.tensors
["<name>.class_map"]`` and, with ``probabilities=True``, ``"<name>.class_probs"``), or any
object following :class:`vidflow.heads.base.Head`. By default the head comes from the model's
metadata (Ultralytics exports carry ``task``), else ``yolov8``.

``batch.labels["objects"]`` gets the class names, ``batch.labels["keypoints"]`` /
``["skeleton"]`` the keypoint names and skeleton (pose). With ``keep_input`` / ``keep_output``
the preprocessed input ``"<name>.input" [B,3,H,W]`` and every raw output ``"<name>.<output>"``
go into ``batch.tensors`` as they are (no copy).

Regions of interest (``rois``, DeepStream's ``nvdspreprocess``): for the frames of a source with
ROIs the model sees only the ROI crops, each letterboxed to the model input, all ROIs of all
frames of the batch in one forward pass (frames of sources without ROIs: the whole frame, in the
same pass). Objects come back in source pixels, clipped to their ROI; objects of overlapping
ROIs are merged by per-frame class-aware NMS at ``iou``; nothing outside every ROI is reported.
Masks and keypoints are mapped back the same way; a semantic head's class map is the ROIs'
maps put together (the larger probability per class where ROIs overlap), ``-1`` outside every
ROI. See :mod:`vidflow.ops.roi`.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch

from ..batch import Batch
from ..engines.load import DEMO, head_for, load_model, require_runtime
from ..heads.base import HEADS, Head, HeadResult
from ..ops.geometry import normalize, preprocess
from ..ops.roi import Views, letterbox_crops, parse_rois, plan

__all__ = ["Detector"]

#: the head names a YAML may give (``heads.base.HEADS``)
HeadName = Literal["yolov8", "yolov5", "end2end", "segment", "pose", "semantic"]


class Detector:
    """Run a detector (or a segmentation / pose model) on every batch.

    ``model``: ``"demo"`` (vidflow's own shapes detector), a path (``.onnx``, ``.torchscript``),
    an ``nn.Module`` or an engine. ``head``: see the module text (``format=`` is the old name,
    still accepted with a DeprecationWarning). ``size=(W, H)`` of the model input (default: the
    model's metadata, else 640x640). ``conf``: a float or one value per class. ``labels``:
    class names (default: the model's metadata). ``half``: float16 on CUDA. ``color``: channel
    order the model expects. ``letterbox=False`` resizes without keeping the aspect ratio.
    ``classes``: keep only these class ids. ``mean``/``std``: optional normalisation after
    scaling to 0..1. ``output``: which output to decode (default: the first 3-d one).
    ``masks``: a segment head's instance masks, ``True`` / ``False``: always / never, ``"auto"``
    (default): only where something reads them (a ``Pipeline`` says, when it is built, whether a
    later stage or a sink reads masks, by what each declares, ``stages.base.reads_masks``: one
    that does not say counts as reading them; or whether the caller iterates its batches; used on
    its own the detector builds them). ``kpt_shape``, ``keypoint_names``,
    ``skeleton`` override the pose model's metadata. ``probabilities=True`` keeps a semantic head's
    per-class probabilities (``"<name>.class_probs"``) beside its class map.
    ``rois``: regions of interest per source, ``{source_id: [[x1, y1, x2, y2], ...]}`` in source
    pixels (YAML keys: the source ids, ints or strings); the model sees only these crops of that
    source's frames (see the module text); not together with keep_input or keep_output
    (the model's batch is then the crops, not the frames).
    """

    def __init__(self, model: Any = DEMO, *, head: HeadName | Head | None = None, format: HeadName | None = None,
                 size: Sequence[int] | int | None = None, conf: float | Sequence[float] = 0.25,
                 iou: float = 0.7, max_det: int = 300, labels: Sequence[str] | None = None, half: bool = False,
                 color: Literal["rgb", "bgr"] = "rgb", letterbox: bool = True, keep_input: bool = False,
                 keep_output: bool = False, classes: Sequence[int] | None = None, agnostic: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 output: str | None = None, backend: Literal["auto", "onnxruntime", "torch"] = "auto",
                 masks: bool | Literal["auto"] = "auto", probabilities: bool = False, kpt_shape: Sequence[int] | None = None,
                 keypoint_names: Sequence[str] | None = None, skeleton: Sequence[Sequence[int]] | None = None,
                 rois: Mapping[int | str, Sequence[tuple[int, int, int, int]]] | None = None,
                 name: str = "detect") -> None:
        if format is not None:
            warnings.warn("Detector(format=...) is now head=...", DeprecationWarning, stacklevel=2)
            if head is not None and head != format:
                raise ValueError(f"head={head!r} and format={format!r}: give one (format is the old name)")
            head = format
        if head == "detect":
            head = "yolov8"
        if isinstance(head, str) and head not in HEADS:
            raise ValueError(f"head: expected one of {', '.join(HEADS)} or a Head object, got {head!r}")
        if head is not None and not isinstance(head, str) and not callable(head):
            raise ValueError(f"head: expected a name or a Head (a callable), got {type(head).__name__}")
        if masks not in (True, False, "auto"):
            raise ValueError(f"masks: expected true, false or 'auto', got {masks!r}")
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
        require_runtime(model, backend)      # a missing [onnx] extra: said here, not at the first batch
        self.rois = parse_rois(rois)
        if self.rois and (keep_input or keep_output):
            raise ValueError("keep_input / keep_output: not with rois (the model's batch is then the ROI crops, "
                             "not the frames)")
        self._plans: dict = {}
        self.model = model
        self.head = head
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
        self.masks: bool | Literal["auto"] = masks if masks == "auto" else bool(masks)
        # "auto": what each live pipeline said (weakly keyed: a pipeline gone has no say), and a
        # caller without an owner; masks until one says nothing reads them
        self._masks_votes: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()
        self._masks_unowned: bool | None = None
        self.probabilities = bool(probabilities)
        self.kpt_shape = tuple(int(v) for v in kpt_shape) if kpt_shape is not None else None
        self.keypoint_names = tuple(keypoint_names) if keypoint_names is not None else None
        self.skeleton = tuple(tuple(int(v) for v in e) for e in skeleton) if skeleton is not None else None
        self.name = name
        self.engine: Any = None
        self.meta: dict[str, Any] = {}
        self._device: torch.device | None = None

    #: the detector replaces the objects: it reads no masks of earlier stages (``stages.base``)
    reads_masks = False

    def masks_needed(self, needed: bool, owner: object = None) -> None:
        """Whether anything after this stage reads instance masks (``stages.base.MasksOnDemand``;
        a ``Pipeline`` calls it, as ``owner``); with ``masks="auto"`` masks are built only when it
        does, and for a detector shared by several pipelines, when any of them does."""
        if owner is None:
            self._masks_unowned = bool(needed)
        else:
            self._masks_votes[owner] = bool(needed)

    @property
    def makes_masks(self) -> bool:
        """Whether a segment head's instance masks are built now (``masks``, and for ``"auto"``
        what the pipeline said)."""
        if self.masks == "auto":
            votes = [*self._masks_votes.values(), *(() if self._masks_unowned is None else (self._masks_unowned,))]
            return any(votes) if votes else True
        return bool(self.masks)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The model input ``(W, H)`` in use (None before the model is loaded)."""
        return getattr(self, "_size", None)

    @property
    def active_head(self) -> Any:
        """The head object in use (None before the model is loaded)."""
        return getattr(self, "_head", None)

    @property
    def format(self) -> str | None:  # the old name
        return self.head if isinstance(self.head, str) else None

    # lazy set-up on the batch's device ------------------------------------------------------
    def _load(self, device: torch.device) -> None:
        demo: Literal["detector", "semantic"] = "semantic" if self.head == "semantic" else "detector"
        self.engine, md = load_model(self.model, device=device, half=self.half, backend=self.backend, demo=demo)
        self.meta = md
        self._device = device
        self._size = self.size or md.get("input_size") or (640, 640)
        self._labels = self.labels or md.get("labels")
        self._head = self._make_head(md)

    def _make_head(self, md: dict[str, Any]) -> Any:
        h = self.head if self.head is not None else (head_for(md) or "yolov8")
        if not isinstance(h, str):
            return h
        common: dict[str, Any] = dict(conf=self.conf, iou=self.iou, max_det=self.max_det, classes=self.classes,
                                      agnostic=self.agnostic, output=self.output)
        if h == "segment":
            from ..heads.yolo_seg import SegmentHead
            return SegmentHead(**common)
        if h == "pose":
            from ..heads.yolo_pose import PoseHead
            ks = self.kpt_shape or md.get("kpt_shape")
            if ks is None:
                raise ValueError(f"{self.name}: head 'pose' needs kpt_shape (the model's metadata has none): "
                                 f"set kpt_shape: [keypoints, 3]")
            return PoseHead(kpt_shape=ks, **common)
        if h == "semantic":
            from ..heads.semantic import SemanticHead
            return SemanticHead(output=self.output)
        from ..heads.yolo import YoloHead
        return YoloHead(cast(Any, h), **common)

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
        crops = plan(batch.frames, self.rois, batch.device, self._plans) if self.rois else None
        if crops is None:
            x, place = preprocess(batch.images, self._size, mode="letterbox" if self.letterbox else "resize",
                                  color=self.color, mean=self.mean, std=self.std, dtype=dtype)
            views = Views.full(place, batch.regions(), batch.source_sizes())
        else:
            x, views = letterbox_crops(batch.images, crops[0], crops[1], batch.regions(), batch.source_sizes(),
                                       self._size, letterbox=self.letterbox)
            x = normalize(x, mean=self.mean, std=self.std, color=self.color, dtype=dtype)
        return batch, x, views, self.engine(x)

    def finish(self, pending: tuple) -> Batch:
        """The second half: decode the model's outputs with the head, map to source pixels."""
        batch, x, views, outs = pending
        if x.is_cuda:                 # made on the launching thread's stream, read on this one
            cur = torch.cuda.current_stream(x.device)
            for t in (x, *outs.values()):
                t.record_stream(cur)
        if self.output is not None and self.output not in outs:
            raise ValueError(f"output: {self.output!r} is not an output of the model; it has {list(outs)}")
        res = self._head(outs, x.shape[0])
        if not isinstance(res, HeadResult):
            raise ValueError(f"{self.name}: the head returned {type(res).__name__}, expected a HeadResult")
        from ._detect_map import build
        objs, tensors, labels = build(self, batch, x, views, res)
        if not labels.get("objects"):
            num = getattr(self._head, "num_classes", None)
            n = num(outs) if callable(num) else 0
            labels["objects"] = tuple(str(i) for i in range(max(n, 0)))
        tensors = {**batch.tensors, **tensors}
        if self.keep_input:
            tensors[f"{self.name}.input"] = x
        if self.keep_output:
            tensors.update({f"{self.name}.{k}": v for k, v in outs.items()})
        return batch.replace(objects=objs, tensors=tensors, labels={**batch.labels, **labels})

    def warmup(self, batch_size: int, device: torch.device) -> None:
        """Prepare the engine for every batch size up to ``batch_size`` (``Pipeline`` calls this
        on CUDA before the sources start: cuDNN autotuning and CUDA graph capture happen now, not
        on the first batch of each size)."""
        if self.engine is None or self._device != device:
            self._load(device)
        warm = getattr(self.engine, "warmup", None)
        if callable(warm):
            w, h = self._size
            # with ROIs the model's batch is the crops: up to every frame's largest ROI count
            warm(batch_size * max([len(r) for r in self.rois.values()] or [1]), (3, h, w))

    def close(self) -> None:
        self.engine = None

    def __repr__(self) -> str:
        m = self.model if isinstance(self.model, (str, os.PathLike)) else type(self.model).__name__
        h = self.head if isinstance(self.head, (str, type(None))) else type(self.head).__name__
        r = f", rois={sum(map(len, self.rois.values()))} on {len(self.rois)} source(s)" if self.rois else ""
        return f"Detector(model={m!r}, head={h}, conf={self.conf}, iou={self.iou}{r}, name={self.name!r})"
