"""The per-frame bridge: a :class:`~vidflow.batch.Batch` as one message per frame, and back.

Column names follow DeepStream's GXF translators (see DESIGN.md, "Per-frame columns"):

==============================================  ===============================================
column                                          dtype, shape (N = objects of the frame)
==============================================  ===============================================
``frame``                                       uint8 ``[3,H,W]``, a zero-copy view of the batch image
``source-id`` ``frame-num`` ``pts`` ``ntp``     Python scalars (``ntp`` = ``FrameInfo.ntp_ns``)
``source-frame-width`` ``source-frame-height``  Python ints
``bbox`` ``detector-bbox``                      float32 ``(N,4)`` xyxy, source pixels
``tracker-bbox``                                float32 ``(N,4)``; only when the batch has ``attrs["track.bbox"]``
``class-id``                                    int64 ``(N,1)``
``confidence``                                  float32 ``(N,1)``
``object-id``                                   int64 ``(N,1)``, -1 untracked
``tracker-confidence``                          float32 ``(N,1)``
``object-label``                                uint8 ``(N,L)``, zero-padded UTF-8 of ``labels["objects"][class_id]``
``classification-<s>``                          ``(N,M,1)`` label ids, from ``attrs["<s>.label"]`` (``[N]`` or ``[N,M]``)
``classification-confidence-<s>``               ``(N,M,1)``, from ``attrs["<s>.confidence"]`` when present
``classification-label-<s>``                    uint8 ``(N,M,L)``, names from ``labels["<s>"]`` when present
``instance-segmentation``                       float32 ``(N,rows,cols)``: each object's mask, cropped to its box:
                                                row 0, col 0 = source pixel (ceil(x1), ceil(y1)) of
                                                ``bbox`` (``Objects.masks``; 0/1 values)
``instance-segmentation-valid``                 uint8 ``(N,1)``, 1 where the object has a mask
``keypoints``                                   float32 ``(N,K,3)`` x, y (source pixels), score
``seg-class-map``                               int32 ``(rows,cols)``, from ``tensors["<s>.class_map"]``
``seg-class-probability-matrix``                float32 ``(rows,cols,classes)``, from ``tensors["<s>.class_probs"]``
``infer-tensor-frame-<s>.<layer>``              ``batch.tensors["<s>.<layer>"][i]`` (a view)
``infer-tensor-object-<s>.<name>``              every other ``attrs["<s>.<name>"]``, ``(N, ...)``
==============================================  ===============================================

Per-object columns are views of the batch's columns when the object table is ordered by frame
(the usual case), copies otherwise. :func:`to_frames` reads the object counts to the host once
per batch. :func:`from_frames` inverts it exactly for the object columns (``object-label`` and
``classification-label-*`` are derived from ids and not read back; an ``attrs["<s>.label"]`` of
shape ``[N,1]`` comes back as ``[N]``). Any DLPack array (torch, NumPy, CuPy, JAX) is accepted
on the way back, so a detector written as plain array code can feed the tracker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from .batch import TRACKER_BBOX, Batch, Objects

__all__ = ["to_frames", "from_frames", "objects_from_columns", "to_columns", "batch_object_columns", "eos_message", "is_eos",
           "decode_labels", "tensors_from_frames", "FRAME_COLUMNS", "OBJECT_COLUMNS"]

Message = dict[str, Any]
Translator = Callable[[Batch, int, Message], None]

#: Scalar / frame columns present in every frame message.
FRAME_COLUMNS = ("frame", "source-id", "frame-num", "pts", "ntp", "source-frame-width", "source-frame-height")
#: Object columns present in every frame message (plus the optional ones in the module table).
OBJECT_COLUMNS = ("bbox", "class-id", "confidence", "object-id", "tracker-confidence", "object-label",
                  "detector-bbox")

_CLS, _CLS_CONF, _CLS_LABEL = "classification-", "classification-confidence-", "classification-label-"
_T_FRAME, _T_OBJ = "infer-tensor-frame-", "infer-tensor-object-"
_EOS = "end-of-stream"
_MASK, _MASK_OK, _KPTS = "instance-segmentation", "instance-segmentation-valid", "keypoints"
_SEG_MAP, _SEG_PROB = "seg-class-map", "seg-class-probability-matrix"
_FRAME_SUFFIX = {".class_map": _SEG_MAP, ".class_probs": _SEG_PROB}


def _frame_column(key: str) -> str:
    for suffix, col in _FRAME_SUFFIX.items():
        if key.endswith(suffix):
            return col
    return _T_FRAME + key


# ---- labels ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _label_table(names: tuple[str, ...], device: str) -> torch.Tensor:
    """``[C+1, L]`` uint8: zero-padded UTF-8 of each name, plus an all-zero row for unknown ids."""
    raw = [n.encode("utf-8") for n in names]
    width = max([1, *map(len, raw)])
    buf = bytearray(b"".join(r.ljust(width, b"\0") for r in raw) + b"\0" * width)
    return torch.frombuffer(buf, dtype=torch.uint8).view(len(names) + 1, width).to(device)


def _labels_of(ids: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """uint8 ``[*ids.shape, L]`` names of integer ``ids`` (zeros for ids outside ``names``)."""
    table = _label_table(tuple(names), str(ids.device))
    c = len(names)
    ids = ids.long()
    return table[torch.where((ids >= 0) & (ids < c), ids, torch.full_like(ids, c))]


def decode_labels(labels: Any) -> list[str]:
    """Turn an ``object-label`` column (``(N,L)`` zero-padded UTF-8) back into ``N`` strings."""
    t = _as_tensor(labels).cpu().to(torch.uint8)
    return [bytes(row).rstrip(b"\0").decode("utf-8", "replace") for row in t.reshape(t.shape[0], -1).tolist()]


# ---- batch -> columns -----------------------------------------------------------------------
def batch_object_columns(batch: Batch) -> dict[str, torch.Tensor]:
    """The object columns of the whole batch, ``[N, ...]`` each (frame order not applied)."""
    o = batch.objects
    n = len(o)
    cols: dict[str, torch.Tensor] = {
        "bbox": o.bbox, "class-id": o.class_id[:, None], "confidence": o.confidence[:, None],
        "object-id": o.object_id[:, None], "tracker-confidence": o.tracker_confidence[:, None],
        "object-label": _labels_of(o.class_id, batch.labels.get("objects", ())), "detector-bbox": o.bbox,
    }
    if o.masks is not None:
        cols[_MASK] = o.masks.data.to(torch.float32)
        cols[_MASK_OK] = torch.ones(n, 1, dtype=torch.uint8, device=o.device)
    if o.keypoints is not None:
        cols[_KPTS] = o.keypoints
    attrs = dict(o.attrs)
    if TRACKER_BBOX in attrs:
        cols["tracker-bbox"] = attrs.pop(TRACKER_BBOX)
    stages = sorted(k[: -len(".label")] for k in attrs if k.endswith(".label"))
    for s in stages:
        lab = attrs.pop(f"{s}.label").reshape(n, -1, 1)
        cols[_CLS + s] = lab
        conf = attrs.get(f"{s}.confidence")
        if conf is not None and conf.numel() == lab.numel():
            cols[_CLS_CONF + s] = attrs.pop(f"{s}.confidence").reshape(n, -1, 1)
        if s in batch.labels:
            cols[_CLS_LABEL + s] = _labels_of(lab[..., 0], batch.labels[s])
    for k, v in attrs.items():
        cols[_T_OBJ + k] = v
    return cols


def _counts(batch: Batch) -> tuple[list[int], bool]:
    """Objects per frame and whether the table is ordered by frame (one host sync, none if N=0)."""
    b, fi = len(batch), batch.objects.frame_idx
    if fi.shape[0] == 0:
        return [0] * b, True
    ordered = (fi[1:] >= fi[:-1]).all() if fi.shape[0] > 1 else torch.ones((), dtype=torch.bool, device=fi.device)
    host = torch.cat([torch.bincount(fi, minlength=b), ordered.long().view(1)]).tolist()
    if len(host) != b + 1:
        raise ValueError(f"Objects.frame_idx: values must be < batch size {b}")
    return host[:b], bool(host[b])


def to_frames(batch: Batch, *, translators: Iterable[Translator] = ()) -> list[Message]:
    """One message (dict keyed by the column names in the module table) per frame of ``batch``.

    ``translators``: callables ``(batch, i, message) -> None`` run on each frame's message after
    the built-in columns, to add columns of their own.
    """
    counts, ordered = _counts(batch)
    cols = batch_object_columns(batch)
    if not ordered:
        order = torch.argsort(batch.objects.frame_idx, stable=True)
        cols = {k: v[order] for k, v in cols.items()}
    split = {k: torch.split(v, counts) for k, v in cols.items()}
    translators = tuple(translators)
    out = []
    for i, f in enumerate(batch.frames):
        msg: Message = {
            "frame": batch.images[i], "source-id": f.source_id, "frame-num": f.frame_num, "pts": f.pts,
            "ntp": f.ntp_ns, "source-frame-width": f.width, "source-frame-height": f.height,
        }
        for k, parts in split.items():
            msg[k] = parts[i]
        for k, t in batch.tensors.items():
            msg[_frame_column(k)] = t[i]
        for tr in translators:
            tr(batch, i, msg)
        out.append(msg)
    return out


def to_columns(batch: Batch) -> dict[str, Any]:
    """The batch in padded form: every object column as ``[B, K, ...]`` (K = most objects in a
    frame) plus ``num_objects`` int64 ``[B]``; row ``j`` of frame ``i`` is valid when
    ``j < num_objects[i]``. Padding is -1 for ``class-id`` / ``object-id`` / ``classification-<s>``
    and 0 elsewhere. Frame columns: ``frame`` = ``batch.images`` ``[B,3,H,W]``, ``source-id`` a
    tuple, ``frame-num`` / ``ntp`` / ``source-frame-width`` / ``source-frame-height`` int64 ``[B]``,
    ``pts`` float64 ``[B]`` (CPU), ``infer-tensor-frame-*`` the batch tensors. One host sync.
    """
    b, dev = len(batch), batch.device
    fi = batch.objects.frame_idx
    counts = torch.bincount(fi, minlength=b)[:b]
    k = int(counts.max()) if fi.shape[0] else 0
    order = torch.argsort(fi, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    fs = fi[order]
    pos = torch.arange(fi.shape[0], device=dev) - starts[fs]
    out: dict[str, Any] = {"num_objects": counts}
    for name, v in batch_object_columns(batch).items():
        pad = -1 if name in ("class-id", "object-id") or (name.startswith(_CLS) and not name.startswith(
            (_CLS_CONF, _CLS_LABEL))) else 0
        dst = torch.full((b, k, *v.shape[1:]), pad, dtype=v.dtype, device=dev)
        dst[fs, pos] = v[order]
        out[name] = dst
    fr = batch.frames
    out.update({
        "frame": batch.images, "source-id": tuple(f.source_id for f in fr),
        "frame-num": torch.tensor([f.frame_num for f in fr], dtype=torch.int64),
        "pts": torch.tensor([f.pts for f in fr], dtype=torch.float64),
        "ntp": torch.tensor([f.ntp_ns for f in fr], dtype=torch.int64),
        "source-frame-width": torch.tensor([f.width for f in fr], dtype=torch.int64),
        "source-frame-height": torch.tensor([f.height for f in fr], dtype=torch.int64),
    })
    for name, t in batch.tensors.items():
        out[_frame_column(name)] = t
    return out


# ---- columns -> objects ---------------------------------------------------------------------
def _as_tensor(x: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch view of any DLPack array (torch, NumPy, CuPy, JAX) or a copy of a list/scalar."""
    if isinstance(x, torch.Tensor):
        t = x
    elif hasattr(x, "__dlpack__"):
        try:
            t = torch.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError):  # e.g. read-only or non-native NumPy arrays
            t = torch.as_tensor(x)
    else:
        t = torch.as_tensor(x)
    return t if device is None else t.to(device)


def _flat(t: torch.Tensor, n: int) -> torch.Tensor:
    """``(N,1)`` / ``(N,)`` / ``(N,M,1)`` -> ``[N]`` when one value per object, else ``[N,M]``."""
    if t.dim() <= 1:
        return t.reshape(n)
    if t.shape[0] != n:
        raise ValueError(f"expected {n} rows (one per object), got shape {tuple(t.shape)}")
    t = t.flatten(1)
    return t[:, 0] if t.shape[1] == 1 else t


def objects_from_columns(columns: Mapping[str, Any], *, frame_idx: Any = 0,
                         device: torch.device | str | None = None) -> Objects:
    """Build an :class:`Objects` table from per-object columns named as in the module table.

    ``columns`` needs ``bbox`` (or ``detector-bbox``) ``(N,4)``; ``class-id``, ``confidence``,
    ``object-id``, ``tracker-confidence`` (``(N,1)`` or ``(N,)``) default to 0, 1, -1, 0;
    ``tracker-bbox`` -> ``attrs["track.bbox"]``; ``classification-<s>`` /
    ``classification-confidence-<s>`` -> ``attrs["<s>.label"]`` / ``attrs["<s>.confidence"]``
    (``[N]``, or ``[N,M]`` for M > 1); ``infer-tensor-object-<key>`` -> ``attrs[key]``. Other keys
    (frame columns, ``object-label``, user columns) are ignored. Values may be any DLPack array.
    ``frame_idx``: an int (all objects in that frame) or ``[N]`` ints. ``device``: where the table
    goes (default: where ``bbox`` is).
    """
    if "bbox" not in columns and "detector-bbox" not in columns:
        raise ValueError(f"columns: expected a 'bbox' column, got {sorted(columns)}")
    bbox = _as_tensor(columns["bbox"] if "bbox" in columns else columns["detector-bbox"])
    dev = torch.device(device) if device is not None else bbox.device
    bbox = bbox.to(dev)
    if bbox.dim() != 2 or bbox.shape[1] != 4:
        raise ValueError(f"bbox: expected shape (N, 4), got {tuple(bbox.shape)}")
    n = int(bbox.shape[0])
    fi = _as_tensor(frame_idx, dev)
    fi = fi.expand(n) if fi.dim() == 0 else fi

    def get(name: str) -> torch.Tensor | None:
        v = columns.get(name)
        return None if v is None else _flat(_as_tensor(v, dev), n)

    attrs: dict[str, torch.Tensor] = {}
    masks = keypoints = None
    if columns.get(_MASK) is not None:
        from .ops.masks import Masks
        data = _as_tensor(columns[_MASK], dev)
        if data.dim() != 3 or data.shape[0] != n:
            raise ValueError(f"{_MASK}: expected shape (N, rows, cols) with N={n}, got {tuple(data.shape)}")
        data = data > 0.5
        ok = columns.get(_MASK_OK)
        if ok is not None:
            data = data & (_flat(_as_tensor(ok, dev), n) > 0)[:, None, None]
        masks = Masks(data, torch.ceil(bbox[:, :2]).clamp(min=0).to(torch.int64))
    if columns.get(_KPTS) is not None:
        keypoints = _as_tensor(columns[_KPTS], dev).to(torch.float32)
    for name, v in columns.items():
        if name == "tracker-bbox":
            attrs[TRACKER_BBOX] = _as_tensor(v, dev).reshape(n, 4)
        elif name.startswith(_CLS_CONF):
            attrs[f"{name[len(_CLS_CONF):]}.confidence"] = _flat(_as_tensor(v, dev), n)
        elif name.startswith(_CLS_LABEL):
            continue
        elif name.startswith(_CLS):
            attrs[f"{name[len(_CLS):]}.label"] = _flat(_as_tensor(v, dev), n)
        elif name.startswith(_T_OBJ):
            attrs[name[len(_T_OBJ):]] = _as_tensor(v, dev)
    return Objects.create(frame_idx=fi, bbox=bbox, confidence=get("confidence"), class_id=get("class-id"),
                          object_id=get("object-id"), tracker_confidence=get("tracker-confidence"), attrs=attrs,
                          masks=masks, keypoints=keypoints)


def _is_object_column(name: str) -> bool:
    return name in ("bbox", "class-id", "confidence", "object-id", "tracker-confidence", "tracker-bbox",
                    "detector-bbox", _MASK, _MASK_OK, _KPTS) or (name.startswith((_CLS, _T_OBJ)) and not name.startswith(_CLS_LABEL))


def from_frames(messages: Sequence[Message], *, device: torch.device | str | None = None) -> Objects:
    """The :class:`Objects` of a list of frame messages (end-of-stream messages are skipped);
    ``frame_idx`` is each message's position among the frame messages. Exact inverse of
    :func:`to_frames` for the object columns. A column present in some messages must be in all
    messages that have objects.
    """
    frames = [m for m in messages if not is_eos(m)]
    if not frames:
        return Objects.empty(device or "cpu")
    for i, m in enumerate(frames):
        if "bbox" not in m and "detector-bbox" not in m:
            raise ValueError(f"messages[{i}]: expected a 'bbox' column, got {sorted(m)}")
    boxes = [_as_tensor(m["bbox"] if "bbox" in m else m["detector-bbox"]) for m in frames]
    dev = torch.device(device) if device is not None else boxes[0].device
    ns = [int(b.shape[0]) for b in boxes]
    names = sorted({k for m in frames for k in m if _is_object_column(k)} - {"bbox", "detector-bbox"})
    cols: dict[str, torch.Tensor] = {"bbox": torch.cat([b.to(dev).reshape(-1, 4) for b in boxes])}
    for name in names:
        parts = []
        for i, m in enumerate(frames):
            if name in m:
                t = _as_tensor(m[name], dev)
                if name == "tracker-bbox":
                    t = t.reshape(-1, 4)
                elif name in (_MASK, _KPTS):
                    pass
                elif not name.startswith(_T_OBJ):  # one value (or M) per object: normalise the shape
                    t = _flat(t, ns[i])
                parts.append(t)
            elif ns[i]:
                raise ValueError(f"messages[{i}]: column {name!r} missing (other frames have it)")
        if name == _MASK:   # crops of different batches: pad to the largest
            h = max(p.shape[1] for p in parts)
            w = max(p.shape[2] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, w - p.shape[2], 0, h - p.shape[1])) for p in parts]
        cols[name] = torch.cat(parts)
    fi = torch.repeat_interleave(torch.arange(len(frames)), torch.tensor(ns)).to(dev)
    return objects_from_columns(cols, frame_idx=fi, device=dev)


def tensors_from_frames(messages: Sequence[Message], *, name: str = "detect",
                        device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The per-frame tensors of frame messages, stacked: ``seg-class-map`` ->
    ``"<name>.class_map" [B, rows, cols]``, ``seg-class-probability-matrix`` ->
    ``"<name>.class_probs"``, ``infer-tensor-frame-<key>`` -> ``key`` (the inverse of what
    :func:`to_frames` writes; a column must be in every frame message)."""
    frames = [m for m in messages if not is_eos(m)]
    back = {_SEG_MAP: f"{name}.class_map", _SEG_PROB: f"{name}.class_probs"}
    keys = sorted({k for m in frames for k in m if k in back or k.startswith(_T_FRAME)})
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        missing = [i for i, m in enumerate(frames) if k not in m]
        if missing:
            raise ValueError(f"messages[{missing[0]}]: column {k!r} missing (other frames have it)")
        out[back.get(k, k[len(_T_FRAME):])] = torch.stack([_as_tensor(m[k], device) for m in frames])
    return out


# ---- end of stream --------------------------------------------------------------------------
def eos_message(source_id: int | str) -> Message:
    """The end-of-stream message of one source: ``{"end-of-stream": True, "source-id": id}``."""
    return {_EOS: True, "source-id": source_id}


def is_eos(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is an end-of-stream message."""
    return bool(message.get(_EOS, False))
