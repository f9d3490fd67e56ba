"""Per-frame records built from the bridge's columns (:func:`vidflow.translate.to_columns`).

:func:`host_frames` takes a batch's padded columns to the host once (a handful of copies per
batch, never per object) as NumPy arrays; every encoder (``sinks/encoders.py``) and file sink
reads those arrays, slicing ``[i, :n]`` per frame, so no record is built object by object from
tensors.

Attribute codecs (``infer-tensor-object-*`` columns, e.g. embeddings, masks, keypoints) keep
payloads compact: :func:`encode_array` writes ``{"encoding": "b64", "dtype": "<f4", "shape":
[...], "data": "<base64 of the little-endian bytes>"}``; boolean masks (``[N,H,W]``, or uint8
0/1 with 3+ dims) become run lengths ``{"encoding": "rle", "shape": [N,H,W], "counts":
[[...], ...]}`` (row-major, each object's runs start with a run of zeros, possibly empty).
:func:`decode_array` inverts both exactly.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..batch import Batch
from ..translate import to_columns

__all__ = ["HostFrames", "host_frames", "encode_array", "decode_array", "rle_encode", "rle_decode",
           "label_names", "identity_names", "OBJECT_PREFIX", "FRAME_PREFIX"]

OBJECT_PREFIX = "infer-tensor-object-"
FRAME_PREFIX = "infer-tensor-frame-"
_SKIP = ("frame", "object-label", "detector-bbox", "num_objects", "source-id", "frame-num", "pts", "ntp",
         "source-frame-width", "source-frame-height")
_SQUEEZE = ("class-id", "confidence", "object-id", "tracker-confidence")


@dataclasses.dataclass(frozen=True)
class HostFrames:
    """A batch's per-frame columns on the host. Object columns are padded ``[B, K, ...]``; row
    ``j`` of frame ``i`` is valid when ``j < count[i]``. ``class-id``/``confidence``/``object-id``/
    ``tracker-confidence`` are ``[B, K]``; ``classification-<s>`` ``[B, K, M]``."""

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
    rle: tuple[list[dict[str, Any]], ...] | None = None

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


def _keep(name: str, attrs: bool | Iterable[str]) -> bool:
    if not name.startswith(OBJECT_PREFIX):
        return True
    if attrs is True:
        return True
    if attrs is False:
        return False
    return name[len(OBJECT_PREFIX):] in set(attrs)


def host_frames(batch: Batch, *, attrs: bool | Iterable[str] = True) -> HostFrames:
    """The batch's columns on the host. ``attrs``: keep every ``infer-tensor-object-*`` column
    (True), none (False) or only the listed attribute keys (``["embed.vector"]``). Frame-level
    tensors (raw model outputs) are not taken."""
    attrs = attrs if isinstance(attrs, bool) else tuple(attrs)
    with torch.no_grad():
        cols = to_columns(batch)
        out: dict[str, np.ndarray] = {}
        for name, v in cols.items():
            if name in _SKIP or name.startswith(FRAME_PREFIX) or name.startswith("classification-label-"):
                continue
            if not _keep(name, attrs):
                continue
            t = v.detach()
            if name in _SQUEEZE:
                t = t.squeeze(-1)
            elif name.startswith("classification-"):
                t = t.squeeze(-1)
            if t.dtype == torch.bfloat16:
                t = t.float()
            out[name] = np.ascontiguousarray(t.cpu().numpy())
        count = cols["num_objects"].cpu().numpy().astype(np.int64)
    labels = {k: tuple(v) for k, v in batch.labels.items()}
    rle = _rle_per_frame(batch, count)
    return HostFrames(
        source_id=tuple(cols["source-id"]), frame_num=cols["frame-num"].numpy(), pts=cols["pts"].numpy(),
        ntp=cols["ntp"].numpy(), width=cols["source-frame-width"].numpy(),
        height=cols["source-frame-height"].numpy(), count=count, columns=out, labels=labels, rle=rle)


def _rle_per_frame(batch: Batch, count: np.ndarray) -> tuple[list[dict[str, Any]], ...] | None:
    """COCO RLE of every object's mask, grouped by frame (``count``: objects per frame). The
    objects are put in frame order on the device, where the run boundaries are found too."""
    objs = batch.objects
    if objs is None or objs.masks is None:
        return None
    from ..ops.masks import to_rle

    masks = objs.masks[torch.argsort(objs.frame_idx, stable=True)]
    sizes = np.repeat([(f.width, f.height) for f in batch.frames], count, axis=0).reshape(-1, 2)
    rles = to_rle(masks, torch.from_numpy(sizes)) if len(sizes) else []
    ends = np.cumsum(count).tolist()
    return tuple(rles[e - n:e] for e, n in zip(ends, count.tolist()))


def label_names(ids: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Names of integer ``ids`` (any shape; ``str(id)`` for ids outside ``names``), as nested lists."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return np.empty(ids.shape, dtype=object).tolist()
    table = np.array([*names, ""], dtype=object)
    c = len(names)
    ok = (ids >= 0) & (ids < c)
    out = table[np.where(ok, ids, c)]
    if not ok.all():
        bad = ~ok
        out[bad] = [str(int(x)) for x in ids[bad]]
    return out.tolist()


def identity_names(key: str, ids: np.ndarray, labels: Mapping[str, tuple[str, ...]]) -> np.ndarray | None:
    """For an ``"<stage>.identity"`` attribute whose stage put its id -> name table in the batch's
    labels (the ``identify`` stage): the names (None where unknown, id < 0), else None."""
    stage, _, what = key.rpartition(".")
    names = labels.get(stage)
    if what != "identity" or names is None or ids.dtype.kind not in "iu":
        return None
    out = np.asarray(label_names(ids, names), dtype=object)
    out[(ids < 0) | (ids >= len(names))] = None
    return out


# ---- attribute codecs -----------------------------------------------------------------------
def rle_encode(masks: np.ndarray) -> list[list[int]]:
    """Run lengths of each ``masks[i]`` flattened row-major, starting with a (possibly empty) run
    of zeros. One ``np.diff`` per object."""
    flat = np.asarray(masks).reshape(len(masks), -1).astype(bool)
    out = []
    for m in flat:
        edges = np.flatnonzero(m[1:] != m[:-1]) + 1
        runs = np.diff(np.concatenate(([0], edges, [m.size]))).tolist()
        out.append(([0] + runs) if m.size and m[0] else runs)
    return out


def rle_decode(counts: list[list[int]], shape: list[int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: bool ``[N, *shape[1:]]``."""
    per = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    out = np.zeros((len(counts), per), dtype=bool)
    for i, runs in enumerate(counts):
        vals = np.arange(len(runs)) % 2 == 1
        out[i] = np.repeat(vals, runs)[:per]
    return out.reshape(shape)


def _is_mask(a: np.ndarray) -> bool:
    if a.dtype == np.bool_:
        return a.ndim >= 2
    return a.dtype == np.uint8 and a.ndim >= 3 and (a.size == 0 or int(a.max()) <= 1)


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A compact JSON-ready form of ``a`` (see the module docstring)."""
    a = np.asarray(a)
    if _is_mask(a):
        return {"encoding": "rle", "shape": list(a.shape), "counts": rle_encode(a)}
    le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"encoding": "b64", "dtype": le.dtype.str, "shape": list(a.shape),
            "data": base64.b64encode(np.ascontiguousarray(le).tobytes()).decode("ascii")}


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    enc = d.get("encoding")
    if enc == "rle":
        return rle_decode(d["counts"], list(d["shape"]))
    if enc == "b64":
        raw = base64.b64decode(d["data"])
        return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
    if enc == "raw":  # msgpack: bytes as they are
        return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
    raise ValueError(f"unknown array encoding {enc!r} (expected 'b64', 'rle' or 'raw')")
