"""Per-frame records built from the bridge's columns (the names of :mod:`vidflow.translate`).

The batch's columns reach the host once per batch (:mod:`vidflow.sinks.hostcopy`: one stacked
copy, a table padded per frame, the masks' RLE, each memoised and shared by every sink);
:func:`host_frames` is the view of it a sink asks for (its ``attrs``, with or without mask RLE
or the dense masks). Every encoder (``sinks/encoders.py``) and file sink reads those arrays,
slicing ``[i, :n]`` per frame, so no record is built object by object from tensors. The arrays
are shared: read-only.

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
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..batch import Batch
from .hostcopy import (
    MASK_COLUMN,
    HostColumns,
    HostFrames,
    host_columns,
    host_dense_masks,
    host_rle,
    host_table,
    prepare_rle,
    stack_to_host,
)

__all__ = ["HostFrames", "HostColumns", "ReadsHostFrames", "host_frames", "host_columns", "host_table", "host_rle",
           "host_dense_masks", "prepare_rle", "stack_to_host", "encode_array",
           "decode_array", "rle_encode", "rle_decode", "label_names", "identity_names", "OBJECT_PREFIX",
           "FRAME_PREFIX"]

OBJECT_PREFIX = "infer-tensor-object-"
FRAME_PREFIX = "infer-tensor-frame-"


@runtime_checkable
class ReadsHostFrames(Protocol):
    """A sink that reads :func:`host_frames` (declared with ``host_masks``: whether it reads the
    masks' RLE too). The pipeline builds the batch's :func:`host_table` (and RLE) once, on its
    tail thread, before calling such sinks' ``write``; a sink used on its own builds it lazily."""

    host_masks: bool


def _keep(name: str, attrs: bool | Iterable[str]) -> bool:
    if not name.startswith(OBJECT_PREFIX):
        return True
    if attrs is True:
        return True
    if attrs is False:
        return False
    return name[len(OBJECT_PREFIX):] in (attrs if isinstance(attrs, frozenset) else set(attrs))


def host_frames(batch: Batch, *, attrs: bool | Iterable[str] = True, masks: bool = True,
                dense_masks: bool = False) -> HostFrames:
    """The batch's columns on the host, as one sink wants them: a view of the shared
    :func:`host_table` (no copy of its own). ``attrs``: keep every ``infer-tensor-object-*``
    column (True), none (False) or only the listed attribute keys (``["embed.vector"]``).
    ``masks``: include the instance masks as COCO RLE (``rle``; made once per batch).
    ``dense_masks``: include them as the bridge's ``instance-segmentation`` column too
    (float32 ``[B, K, rows, cols]``, box-cropped; :func:`host_dense_masks`, its own copy)."""
    table = host_table(batch)
    if attrs is True:
        cols = table.columns
    else:
        keys = attrs if isinstance(attrs, bool) else frozenset(attrs)
        cols = MappingProxyType({k: v for k, v in table.columns.items() if _keep(k, keys)})
    dense = host_dense_masks(batch) if dense_masks else None
    if dense is not None:
        cols = MappingProxyType({**cols, MASK_COLUMN: dense})
    rle = host_rle(batch) if masks else None
    return table if cols is table.columns and rle is None else dataclasses.replace(table, columns=cols, rle=rle)



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
