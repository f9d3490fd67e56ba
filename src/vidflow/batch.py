"""Core data types: ``FrameInfo``, ``Objects`` (one columnar table per batch) and ``Batch``.

All are immutable dataclasses of tensors, checked on construction; ``replace(...)`` returns a
new object. Every tensor a user sees is a ``torch.Tensor``, so ``torch.from_dlpack``,
``cupy.from_dlpack``, ``jax.dlpack`` and ``numpy.from_dlpack`` (CPU) all apply.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from .ops.masks import Masks

__all__ = ["FrameInfo", "Objects", "Batch", "TRACKER_BBOX"]

#: ``Objects.attrs`` key under which a tracker keeps its own (smoothed) box, ``[N,4]`` xyxy.
TRACKER_BBOX = "track.bbox"


def _check(t: Any, name: str, *, shape: tuple, dtype: torch.dtype | tuple | None = None) -> None:
    """Raise ``ValueError`` unless ``t`` is a tensor of ``shape`` (``None`` = any) and ``dtype``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if len(shape) != t.dim() or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if dtype is not None:
        ok = dtype if isinstance(dtype, tuple) else (dtype,)
        if t.dtype not in ok:
            raise ValueError(f"{name}: expected dtype {' or '.join(map(str, ok))}, got {t.dtype}")


def _shape(t: torch.Tensor) -> str:
    return f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}"


@dataclass(frozen=True)
class FrameInfo:
    """Facts about one decoded frame.

    ``frame_num`` counts from 0 per source, ``pts`` is the presentation time in seconds from the
    container, ``ntp_ns`` the wall clock (``time.time_ns()``) when the frame was received.
    ``width``/``height`` are the source resolution. ``region`` is where the frame lies in the
    batch image, ``(x0, y0, x1, y1)`` in batch-image pixels; ``None`` means the batch image *is*
    the source frame (no scaling).
    """

    source_id: int | str
    frame_num: int
    pts: float
    ntp_ns: int = 0
    width: int = 0
    height: int = 0
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.frame_num < 0:
            raise ValueError(f"frame_num must be >= 0, got {self.frame_num}")
        if self.width < 0 or self.height < 0:
            raise ValueError(f"width/height must be >= 0, got {self.width}x{self.height}")

    def replace(self, **kw: Any) -> FrameInfo:
        return dataclasses.replace(self, **kw)


_COLUMNS = ("frame_idx", "bbox", "confidence", "class_id", "object_id", "tracker_confidence")


@dataclass(frozen=True, repr=False)
class Objects:
    """Columnar table of the objects of a whole batch (N rows), on one device.

    ========================  =====================================================
    ``frame_idx``  [N] int64  which frame of the batch the object belongs to
    ``bbox``     [N,4] f32    x1, y1, x2, y2 in **source pixels**
    ``confidence`` [N] f32    detector score
    ``class_id``   [N] int64  detector class
    ``object_id``  [N] int64  track id, -1 when untracked
    ``tracker_confidence`` [N] f32
    ``attrs``                 ``{"<stage>.<name>": Tensor[N, ...]}``
    ``masks``                 :class:`~vidflow.ops.masks.Masks` (box-cropped instance
                              masks, source pixels) or None
    ``keypoints`` [N,K,3] f32 x, y (source pixels), score; or None
    ========================  =====================================================

    Index like a tensor: ``objs[objs.confidence > 0.5]``, ``objs[idx]``, ``objs[2:5]``.
    """

    frame_idx: torch.Tensor
    bbox: torch.Tensor
    confidence: torch.Tensor
    class_id: torch.Tensor
    object_id: torch.Tensor
    tracker_confidence: torch.Tensor
    attrs: Mapping[str, torch.Tensor] = field(default_factory=dict)
    masks: Masks | None = None
    keypoints: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check(self.frame_idx, "Objects.frame_idx", shape=(None,), dtype=torch.int64)
        n = self.frame_idx.shape[0]
        dev = self.frame_idx.device
        _check(self.bbox, "Objects.bbox", shape=(n, 4), dtype=torch.float32)
        _check(self.confidence, "Objects.confidence", shape=(n,), dtype=torch.float32)
        _check(self.class_id, "Objects.class_id", shape=(n,), dtype=torch.int64)
        _check(self.object_id, "Objects.object_id", shape=(n,), dtype=torch.int64)
        _check(self.tracker_confidence, "Objects.tracker_confidence", shape=(n,), dtype=torch.float32)
        for name in _COLUMNS[1:]:
            t = getattr(self, name)
            if t.device != dev:
                raise ValueError(f"Objects.{name}: expected device {dev} (as frame_idx), got {t.device}")
        for k, v in self.attrs.items():
            if not isinstance(v, torch.Tensor) or v.dim() < 1 or v.shape[0] != n:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"Objects.attrs[{k!r}]: expected a tensor with leading dim {n}, got {got}")
            if v.device != dev:
                raise ValueError(f"Objects.attrs[{k!r}]: expected device {dev}, got {v.device}")
        if self.masks is not None:
            if not isinstance(self.masks, Masks) or len(self.masks) != n or self.masks.device != dev:
                what = f"{len(self.masks)} on {self.masks.device}" if isinstance(self.masks, Masks) else type(self.masks).__name__
                raise ValueError(f"Objects.masks: expected Masks of {n} objects on {dev}, got {what}")
        if self.keypoints is not None:
            _check(self.keypoints, "Objects.keypoints", shape=(n, None, 3), dtype=torch.float32)
            if self.keypoints.device != dev:
                raise ValueError(f"Objects.keypoints: expected device {dev}, got {self.keypoints.device}")
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    # construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> Objects:
        return cls.create(frame_idx=torch.zeros(0, dtype=torch.int64, device=device),
                          bbox=torch.zeros(0, 4, device=device))

    @classmethod
    def create(cls, *, frame_idx: torch.Tensor, bbox: torch.Tensor, confidence: torch.Tensor | None = None,
               class_id: torch.Tensor | None = None, object_id: torch.Tensor | None = None,
               tracker_confidence: torch.Tensor | None = None,
               attrs: Mapping[str, torch.Tensor] | None = None, masks: Masks | None = None,
               keypoints: torch.Tensor | None = None) -> Objects:
        """Build a table, filling missing columns (confidence 1, class 0, object_id -1, tracker 0)
        and casting dtypes (bbox float32, ids int64)."""
        frame_idx = torch.as_tensor(frame_idx).to(torch.int64)
        dev = frame_idx.device
        n = frame_idx.shape[0] if frame_idx.dim() else 0
        def col(t, fill, dtype):
            if t is None:
                return torch.full((n,), fill, dtype=dtype, device=dev)
            return torch.as_tensor(t, device=dev).to(dtype).reshape(-1)
        return cls(frame_idx=frame_idx.reshape(-1), bbox=torch.as_tensor(bbox, device=dev).to(torch.float32),
                   confidence=col(confidence, 1.0, torch.float32), class_id=col(class_id, 0, torch.int64),
                   object_id=col(object_id, -1, torch.int64),
                   tracker_confidence=col(tracker_confidence, 0.0, torch.float32), attrs=dict(attrs or {}),
                   masks=masks, keypoints=None if keypoints is None else keypoints.to(dev, torch.float32))

    @classmethod
    def cat(cls, parts: Sequence[Objects], frame_offsets: Sequence[int] | None = None) -> Objects:
        """Concatenate tables; ``frame_offsets[i]`` is added to ``parts[i].frame_idx``.
        Attributes (and masks / keypoints) missing from some parts are dropped."""
        if not parts:
            raise ValueError("Objects.cat: expected at least one table")
        keys = set(parts[0].attrs)
        for p in parts[1:]:
            keys &= set(p.attrs)
        fi = [p.frame_idx + (frame_offsets[i] if frame_offsets else 0) for i, p in enumerate(parts)]
        return cls(frame_idx=torch.cat(fi), **{c: torch.cat([getattr(p, c) for p in parts]) for c in _COLUMNS[1:]},
                   attrs={k: torch.cat([p.attrs[k] for p in parts]) for k in sorted(keys)},
                   masks=Masks.cat([p.masks for p in parts if p.masks is not None])
                   if all(p.masks is not None for p in parts) else None,
                   keypoints=_cat_keypoints([p.keypoints for p in parts]))

    # access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.frame_idx.shape[0])

    @property
    def device(self) -> torch.device:
        return self.frame_idx.device

    def __getitem__(self, index: Any) -> Objects:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, torch.Tensor):
            index = index.to(self.device)
            if index.dtype == torch.bool:       # one nonzero (one sync) for all the columns
                index = index.nonzero().squeeze(1)
        return Objects(**{c: getattr(self, c)[index] for c in _COLUMNS},
                       attrs={k: v[index] for k, v in self.attrs.items()},
                       masks=None if self.masks is None else self.masks[index],
                       keypoints=None if self.keypoints is None else self.keypoints[index])

    def for_frame(self, i: int) -> Objects:
        """The objects of frame ``i`` of the batch (``frame_idx`` kept as is)."""
        return self[self.frame_idx == i]

    def replace(self, **kw: Any) -> Objects:
        return dataclasses.replace(self, **kw)

    def with_attrs(self, **attrs: torch.Tensor) -> Objects:
        """A copy with attributes added/replaced, e.g. ``objs.with_attrs(**{"embed.vector": v})``."""
        return self.replace(attrs={**self.attrs, **attrs})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Objects:
        return Objects(**{c: getattr(self, c).to(device, non_blocking=non_blocking) for c in _COLUMNS},
                       attrs={k: v.to(device, non_blocking=non_blocking) for k, v in self.attrs.items()},
                       masks=None if self.masks is None else self.masks.to(device, non_blocking=non_blocking),
                       keypoints=None if self.keypoints is None else self.keypoints.to(device, non_blocking=non_blocking))

    def __repr__(self) -> str:
        cols = ", ".join(f"{c}={_shape(getattr(self, c))}" for c in _COLUMNS)
        attrs = ", ".join(f"{k!r}: {_shape(v)}" for k, v in self.attrs.items())
        extra = (f", masks={self.masks!r}" if self.masks is not None else "") + (
            f", keypoints={_shape(self.keypoints)}" if self.keypoints is not None else "")
        return f"Objects(n={len(self)}, device={self.device}, {cols}, attrs={{{attrs}}}{extra})"


def _cat_keypoints(parts: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    if any(p is None for p in parts) or len({p.shape[1] for p in parts}) != 1:  # type: ignore[union-attr]
        return None
    return torch.cat(parts)  # type: ignore[arg-type]


@dataclass(frozen=True, repr=False)
class Batch:
    """One batch of frames from one or more sources.

    ``images``: uint8 RGB ``[B,3,H,W]`` on the pipeline device (a view of a pooled buffer: edit it
    in place if you like, ``.clone()`` it to keep it beyond a few batches). ``frames``: one
    ``FrameInfo`` per image. ``objects``: the batch's object table. ``tensors``: frame-level
    tensors with leading dim B, keyed ``"<stage>.<name>"`` (``"detect.input"``,
    ``"detect.output0"``). ``labels``: class names; ``labels["objects"]`` names
    ``objects.class_id``, ``labels["<stage>"]`` names a classifier stage's label ids.
    """

    images: torch.Tensor
    frames: tuple[FrameInfo, ...]
    #: always an ``Objects`` once built (``None`` when constructing: an empty table)
    objects: Objects = None  # type: ignore[assignment]
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.images, "Batch.images", shape=(None, 3, None, None), dtype=torch.uint8)
        b = self.images.shape[0]
        frames = tuple(self.frames)
        if len(frames) != b:
            raise ValueError(f"Batch.frames: expected {b} FrameInfo (one per image), got {len(frames)}")
        for f in frames:
            if not isinstance(f, FrameInfo):
                raise ValueError(f"Batch.frames: expected FrameInfo items, got {type(f).__name__}")
        object.__setattr__(self, "frames", frames)
        objs = self.objects if self.objects is not None else Objects.empty(self.images.device)
        if not isinstance(objs, Objects):
            raise ValueError(f"Batch.objects: expected Objects, got {type(objs).__name__}")
        if objs.device != self.images.device:
            raise ValueError(f"Batch.objects: expected device {self.images.device}, got {objs.device}")
        object.__setattr__(self, "objects", objs)
        for k, v in self.tensors.items():
            if not isinstance(v, torch.Tensor) or v.dim() < 1 or v.shape[0] != b:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"Batch.tensors[{k!r}]: expected a tensor with leading dim {b}, got {got}")
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        object.__setattr__(self, "labels", MappingProxyType({k: tuple(v) for k, v in self.labels.items()}))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def size(self) -> tuple[int, int]:
        """Batch image size ``(width, height)``."""
        return int(self.images.shape[3]), int(self.images.shape[2])

    def replace(self, **kw: Any) -> Batch:
        out = dataclasses.replace(self, **kw)
        geo = self.__dict__.get("_geometry")
        if geo is not None and "frames" not in kw and "images" not in kw:
            out.__dict__["_geometry"] = geo      # same frames, same images: same mapping
        return out

    def with_tensors(self, **tensors: torch.Tensor) -> Batch:
        return self.replace(tensors={**self.tensors, **tensors})

    @functools.cached_property
    def _geometry(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(regions [B,4], source sizes [B,2]) on the device: built once per batch (one small
        host-to-device copy), carried over by :meth:`replace`."""
        w, h = self.size
        rows = [(*(f.region if f.region is not None else (0.0, 0.0, float(w), float(h))),
                 float(f.width or w), float(f.height or h)) for f in self.frames]
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6).to(self.device, non_blocking=True)
        return t[:, :4], t[:, 4:]

    def regions(self) -> torch.Tensor:
        """``[B,4]`` float32 on the batch device: each frame's region (x0,y0,x1,y1) in the image."""
        return self._geometry[0]

    def source_sizes(self) -> torch.Tensor:
        """``[B,2]`` float32 (width, height) of each frame's source (the image size when unknown)."""
        return self._geometry[1]

    def image_to_source(self, bbox: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """Map xyxy boxes ``[N,4]`` from batch-image pixels of frame ``frame_idx[N]`` to source
        pixels (not clipped)."""
        regions, sizes = self._geometry
        reg = regions[frame_idx]
        scale = sizes[frame_idx] / (reg[:, 2:] - reg[:, :2]).clamp(min=1e-6)
        return (bbox.view(-1, 2, 2) - reg[:, None, :2]).mul(scale[:, None]).view(-1, 4)

    def source_to_image(self, bbox: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`image_to_source`."""
        regions, sizes = self._geometry
        reg = regions[frame_idx]
        scale = (reg[:, 2:] - reg[:, :2]) / sizes[frame_idx]
        return (bbox.view(-1, 2, 2) * scale[:, None] + reg[:, None, :2]).view(-1, 4)

    def to_pandas(self) -> Any:
        """The objects as a flat pandas DataFrame, one row per object with its frame's columns:
        the same columns as :func:`vidflow.read_jsonl` (``source_id``, ``frame_num``, ``pts``, ``ntp``,
        ``width``, ``height``, ``x1`` .. ``y2``, ``class_id``, ``label``, ``confidence``, ``object_id``,
        ``tracker_confidence``, then ``<stage>.<name>`` attributes; identities as names)."""
        from .tables import batch_to_frame   # pandas is imported only here

        return batch_to_frame(self)

    def __repr__(self) -> str:
        srcs = sorted({str(f.source_id) for f in self.frames})
        tens = ", ".join(f"{k!r}: {_shape(v)}" for k, v in self.tensors.items())
        return (f"Batch(images={_shape(self.images)} on {self.device}, sources=[{', '.join(srcs)}], "
                f"objects={len(self.objects)}, tensors={{{tens}}}, labels={sorted(self.labels)})")
