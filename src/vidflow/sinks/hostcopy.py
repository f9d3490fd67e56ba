"""The one host copy of a batch: :func:`host_columns` takes a batch's object table to the host
**once per batch**: every object column (and ``frame_idx``) is viewed as bytes, packed into one
contiguous buffer on the device and copied with one ``.to("cpu")`` (pinned memory and one event
wait on CUDA; :func:`stack_to_host`), then split back into NumPy arrays. :func:`host_table` pads
those per frame on the host (no device work), :func:`host_rle` makes the masks' RLE (their run
starts found on the device by :func:`prepare_rle`, the strings on the host), and
:func:`host_dense_masks` copies the masks themselves (only for a caller that asks: they are most
of a segmentation batch's bytes, and a sink that writes RLE needs only the run starts). Each is
memoised per batch (lock-guarded): the pipeline makes the copy (and the run starts, if a sink
writes RLE) on its tail thread, where the batch is finished, the run summary reads the copy, and
the first sink worker that asks pads the table that all sinks then share. The arrays are shared:
read-only. Sinks ask through :func:`vidflow.sinks.records.host_frames`.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import weakref
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..batch import Batch
from ..translate import batch_object_columns

__all__ = ["HostFrames", "HostColumns", "host_columns", "host_table", "host_rle", "host_dense_masks", "prepare_rle",
           "stack_to_host", "MASK_COLUMN"]

_SKIP = ("object-label", "detector-bbox")
_SQUEEZE = ("class-id", "confidence", "object-id", "tracker-confidence")
_MASK = MASK_COLUMN = "instance-segmentation"    # the box-cropped masks, float32 in the bridge's columns
_RLE = tuple[list[dict[str, Any]], ...]


@dataclasses.dataclass(frozen=True)
class HostFrames:
    """A batch's per-frame columns on the host (NumPy, read-only: shared by every sink). Object
    columns are padded ``[B, K, ...]`` (K = most objects in a frame); row ``j`` of frame ``i`` is
    valid when ``j < count[i]``; padding is -1 for ``class-id`` / ``object-id`` /
    ``classification-<s>`` and 0 elsewhere. ``class-id`` / ``object-id`` int64, ``confidence`` /
    ``tracker-confidence`` float32 are ``[B, K]``; ``bbox`` ``[B, K, 4]``;
    ``classification-<s>`` ``[B, K, M]``; ``infer-tensor-object-<key>`` ``[B, K, ...]`` in the
    attribute's dtype (bfloat16 as float32). ``frame_num`` / ``ntp`` / ``width`` / ``height`` /
    ``count`` int64 and ``pts`` float64 are ``[B]``."""

    source_id: tuple
    frame_num: np.ndarray
    pts: np.ndarray
    ntp: np.ndarray
    width: np.ndarray
    height: np.ndarray
    count: np.ndarray
    columns: Mapping[str, np.ndarray]
    labels: Mapping[str, tuple[str, ...]]
    #: per frame, each object's instance mask as COCO RLE (``{"size": [h, w], "counts": str}``,
    #: ``pycocotools.mask.decode`` reads it) in source pixels; None when the batch has no masks
    #: (or the view was asked for without them)
    rle: _RLE | None = None

    def __post_init__(self) -> None:
        b = len(self.source_id)
        for name in ("frame_num", "pts", "ntp", "width", "height", "count"):
            v = getattr(self, name)
            if v.shape != (b,):
                raise ValueError(f"HostFrames.{name}: expected shape ({b},), got {v.shape}")
        for name, v in self.columns.items():
            if v.shape[:1] != (b,):
                raise ValueError(f"HostFrames.columns[{name!r}]: expected leading dim {b}, got {v.shape}")

    def __len__(self) -> int:
        return len(self.source_id)


@dataclasses.dataclass(frozen=True)
class HostColumns:
    """A batch's object columns on the host as they crossed (NumPy, read-only): one row per
    object in the table's order, ``frame_idx`` ``[N]`` saying whose; the names and dtypes of
    :attr:`HostFrames.columns` (``[N, ...]`` instead of padded ``[B, K, ...]``). The pipeline's
    tail makes this copy (:func:`host_columns`) and the run summary reads it; :func:`host_table`
    pads it per frame for the sinks, on whichever thread asks first."""

    frame_idx: np.ndarray
    columns: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.frame_idx)


# ---- the one host copy per batch ------------------------------------------------------------
_NOT_YET = object()        # a memo entry not made yet (None is an answer: the batch has no masks)


class _Memo:
    __slots__ = ("lock", "cols", "table", "rle", "rle_points", "dense")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cols: HostColumns | None = None
        self.table: HostFrames | None = None
        self.rle: Any = _NOT_YET                 # _RLE, or None: no masks
        self.rle_points: Any = None              # prepare_rle's half, until the strings are made
        self.dense: Any = _NOT_YET               # np.ndarray, or None: no masks

    def columns(self, batch: Batch) -> HostColumns:          # with the lock held
        if self.cols is None:
            self.cols = _copy(batch)
        return self.cols


_memos: dict[int, _Memo] = {}
_memos_lock = threading.Lock()


def _memo(batch: Batch) -> _Memo:
    key = id(batch)
    with _memos_lock:
        m = _memos.get(key)
        if m is None:
            m = _memos[key] = _Memo()
            weakref.finalize(batch, _memos.pop, key, None)   # runs before the id can be reused
    return m


def host_columns(batch: Batch) -> HostColumns:
    """The batch's object columns on the host (all attributes), copied once per batch with one
    stacked device-to-host copy (:func:`stack_to_host`; none when it has no objects) and shared
    by every caller, from any thread."""
    m = _memo(batch)
    with m.lock:
        return m.columns(batch)


def host_dense_masks(batch: Batch) -> np.ndarray | None:
    """The objects' box-cropped instance masks on the host, padded per frame like
    :func:`host_table`'s columns (float32 ``[B, K, rows, cols]``, read-only; None without
    masks): copied once per batch when first asked for, apart from :func:`host_columns` (a
    batch's masks are ~0.5 MB per 1080p frame: sinks that write RLE never copy them)."""
    m = _memo(batch)
    objs = batch.objects
    with m.lock:
        if m.dense is _NOT_YET:
            if objs.masks is None:
                m.dense = None
            else:
                data = objs.masks.data
                dense = (stack_to_host([data])[0] if len(objs) else np.empty(tuple(data.shape), dtype=bool))
                hc = m.columns(batch)
                m.dense = _pad(batch, HostColumns(frame_idx=hc.frame_idx,
                                                  columns={_MASK: dense.astype(np.float32)})).columns[_MASK]
                m.dense.flags.writeable = False
        return m.dense


def host_table(batch: Batch) -> HostFrames:
    """Every column of the batch on the host, padded per frame (all attributes; the masks
    neither as RLE, :func:`host_rle`, nor dense, :func:`host_dense_masks`): built once per batch
    from :func:`host_columns` (host work only) and shared by every caller. Frame-level tensors
    are not taken."""
    m = _memo(batch)
    with m.lock:
        if m.table is None:
            m.table = _pad(batch, m.columns(batch))
        return m.table


def prepare_rle(batch: Batch) -> None:
    """The device half of :func:`host_rle` (the masks' run starts, to the host), done now: the
    pipeline calls it on its tail thread, where the batch is finished; the strings are made
    by the first sink that asks for :func:`host_rle`, on its own thread."""
    m = _memo(batch)
    with m.lock:
        if m.rle_points is None and m.rle is _NOT_YET:
            m.rle_points = _rle_points(batch, m.columns(batch).frame_idx)


def host_rle(batch: Batch) -> _RLE | None:
    """The batch's instance masks as COCO RLE grouped per frame (None without masks), made once
    per batch (the run starts on the device, where the masks are: :func:`prepare_rle`; the
    strings on the host) and shared like :func:`host_table`."""
    m = _memo(batch)
    with m.lock:
        if m.rle is _NOT_YET:
            points = m.rle_points if m.rle_points is not None else _rle_points(batch, m.columns(batch).frame_idx)
            m.rle, m.rle_points = _rle_from_points(points), None
        return m.rle


@functools.lru_cache(maxsize=None)
def _np_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype == torch.bfloat16:
        return np.dtype(np.uint16)            # raw bits; widened to float32 on the host
    return np.dtype(torch.empty(0, dtype=dtype).numpy().dtype)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 1-D tensor of unit stride. (A tensor with one element counts as contiguous
    whatever its stride, e.g. one object's column sliced from an ``[N, 6]`` table, and
    ``contiguous()`` then keeps that stride, which a byte view refuses.)"""
    flat = t.contiguous().reshape(-1)
    return flat if flat.numel() == 0 or flat.stride(-1) == 1 else flat.clone(memory_format=torch.contiguous_format)


def stack_to_host(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """The ``tensors`` (one device) as NumPy arrays of the same shapes, with ONE copy: each is
    viewed as bytes and packed into one buffer (widest items first, so every part stays aligned),
    copied to the host (pinned memory, ``non_blocking``, one event wait on CUDA), and split
    again. bfloat16 comes back as float32 (exact). The arrays are fresh (never views of the
    tensors), even on the CPU."""
    ts = [t.detach() for t in tensors]
    if not ts:
        return []
    dev = ts[0].device
    for t in ts:
        if t.device != dev:
            raise ValueError(f"stack_to_host: all tensors must be on one device, got {dev} and {t.device}")
    order = sorted(range(len(ts)), key=lambda i: -ts[i].element_size())
    parts = [_flat(ts[i]).view(torch.uint8) for i in order]
    buf = torch.cat(parts)
    if dev.type == "cuda":
        host = torch.empty(buf.numel(), dtype=torch.uint8, pin_memory=True)
        host.copy_(buf, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(dev))
        done.synchronize()
    else:
        host = buf.cpu()
    raw = host.numpy()
    out: list[np.ndarray] = [np.empty(0)] * len(ts)
    off = 0
    for i, p in zip(order, parts):
        t = ts[i]
        a = np.frombuffer(raw, dtype=_np_dtype(t.dtype), count=t.numel(), offset=off).reshape(t.shape)
        off += p.numel()
        if t.dtype == torch.bfloat16:
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[i] = a
    return out


def _pad_value(name: str) -> int:
    cls = name.startswith("classification-") and not name.startswith("classification-confidence-")
    return -1 if name in ("class-id", "object-id") or cls else 0


def _copy(batch: Batch) -> HostColumns:
    objs = batch.objects
    cols: dict[str, torch.Tensor] = {}
    for name, t in batch_object_columns(batch).items():
        if name in _SKIP or name == _MASK or name.startswith("classification-label-"):
            continue                         # (the masks: host_dense_masks / host_rle, when asked for)
        if name in _SQUEEZE or name.startswith("classification-"):
            t = t.squeeze(-1)
        cols[name] = t
    if len(objs) == 0:
        fi = np.zeros(0, dtype=np.int64)
        out = {name: np.empty(t.shape, dtype=np.float32 if t.dtype == torch.bfloat16 else _np_dtype(t.dtype))
               for name, t in cols.items()}
    else:
        fi, *host = stack_to_host([objs.frame_idx, *cols.values()])
        out = dict(zip(cols, host))
    for v in (fi, *out.values()):
        v.flags.writeable = False
    return HostColumns(frame_idx=fi, columns=MappingProxyType(out))


def _pad(batch: Batch, hc: HostColumns) -> HostFrames:
    b, fr, fi, n = len(batch), batch.frames, hc.frame_idx, len(hc)
    count = np.bincount(fi, minlength=b)[:b].astype(np.int64)
    k = int(count.max()) if b else 0
    out: dict[str, np.ndarray] = {}
    ordered = bool((fi[1:] >= fi[:-1]).all())
    if ordered and (count == k).all():              # every frame holds k objects: a reshape
        for name, v in hc.columns.items():
            out[name] = v.reshape(b, k, *v.shape[1:])
    else:
        order = np.arange(n) if ordered else np.argsort(fi, kind="stable")
        fs = fi[order]
        pos = np.arange(n) - (np.cumsum(count) - count)[fs]
        for name, v in hc.columns.items():
            dst = np.full((b, k, *v.shape[1:]), _pad_value(name), dtype=v.dtype)
            dst[fs, pos] = v if ordered else v[order]
            dst.flags.writeable = False
            out[name] = dst
    i64 = lambda xs: np.fromiter(xs, dtype=np.int64, count=b)  # noqa: E731
    return HostFrames(
        source_id=tuple(f.source_id for f in fr), frame_num=i64(f.frame_num for f in fr),
        pts=np.fromiter((f.pts for f in fr), dtype=np.float64, count=b), ntp=i64(f.ntp_ns for f in fr),
        width=i64(f.width for f in fr), height=i64(f.height for f in fr), count=count,
        columns=MappingProxyType(out), labels=MappingProxyType({k: tuple(v) for k, v in batch.labels.items()}))


#: a batch's masks' run starts on the host: (object, pixel, sizes [N, 2], objects per frame),
#: or (None, None, None, count) for a batch without masks
_Points = tuple[Any, Any, Any, np.ndarray]


def _rle_points(batch: Batch, fi: np.ndarray) -> _Points:
    """The run starts of every object's mask in its frame (objects put in frame order on the
    device, where the run boundaries are found too), copied to the host; ``fi``: the objects'
    frame indices (:func:`host_columns`)."""
    objs = batch.objects
    b = len(batch)
    count = np.bincount(fi, minlength=b)[:b]
    if objs.masks is None:
        return None, None, None, count
    from ..ops.masks import rle_change_points

    sizes = np.repeat([(f.width, f.height) for f in batch.frames], count, axis=0).reshape(-1, 2)
    if not len(sizes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), sizes, count
    masks = objs.masks
    if len(fi) > 1 and (fi[1:] < fi[:-1]).any():     # (a detector's table is in frame order already:
        order = torch.from_numpy(np.argsort(fi, kind="stable"))    # then no gather of every mask)
        masks = masks[order.to(masks.device, non_blocking=True)]
    obj, pos = rle_change_points(masks, sizes[:, 1])
    return obj, pos, sizes, count


def _rle_from_points(points: _Points) -> _RLE | None:
    """COCO RLE of every object's mask, grouped by frame, from :func:`_rle_points` (host only)."""
    obj, pos, sizes, count = points
    if sizes is None:
        return None
    from ..ops.masks import rle_strings_from_changes

    strings = rle_strings_from_changes(obj, pos, sizes)
    rles = [{"size": [h, w], "counts": c} for (w, h), c in zip(sizes.tolist(), strings)]
    ends = np.cumsum(count).tolist()
    return tuple(rles[e - n:e] for e, n in zip(ends, count.tolist()))
