"""Shared machinery of the secondary (per-object) stages ``Classifier`` and ``Embedder``.

A secondary stage picks the objects it applies to (``on`` classes, ``min_size`` in source
pixels), cuts their crops from ``batch.images`` in one batched op (``ops.crops.crop_resize``),
normalises them (``(x / 255 - mean) / std``), runs the model once on all crops of the batch and
writes one row of results per object. With ``every=K`` a tracked object (``object_id >= 0``) is
re-run only when its last run is K or more frames old; in between its last result is reused
from a device-resident cache keyed by ``(source_id, object_id)`` (bounded, pruned when an object
has not been seen for a while, and per source by ``reset(source_id)``).

``crop="mask"``: the pixels of each crop outside the object's instance mask (``Objects.masks``,
from a segment detector) are set to ``fill`` before the model sees it (``ops.crops.mask_fill``,
all crops at once on the device), so the background and neighbouring objects do not reach the
classifier / embedder. The stage then declares that it reads masks (``reads_masks``), so a
detector with ``masks="auto"`` builds them. Objects without masks (a detect head, or
``masks: false``) get box crops and one ``UserWarning`` per stage.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..batch import Batch
from ..ops._const import const
from ..ops.crops import crop_resize, mask_fill

__all__ = ["CropStage", "resolve_model", "first_output"]


def first_output(out: Any) -> torch.Tensor:
    """A model's (first) output tensor: from a tensor, a ``{name: tensor}`` dict or a tuple/list."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        for v in out.values():
            if isinstance(v, torch.Tensor):
                return v
    if isinstance(out, (tuple, list)):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
    raise ValueError(f"model returned no tensor (got {type(out).__name__})")


def resolve_model(model: Any, device: torch.device) -> Callable[[torch.Tensor], Any]:
    """An engine for ``model`` on ``device``: a path or an ``nn.Module``
    (``vidflow.engines.load_engine``), or any callable ``Tensor -> outputs``."""
    if isinstance(model, (str, os.PathLike, torch.nn.Module)):
        from ..engines.load import load_model  # one loader for every stage ("demo", metadata, refusals)

        return load_model(model, device=device)[0]
    if callable(model):
        return model
    raise ValueError(f"model: expected a path, an nn.Module or a callable, got {type(model).__name__}")


class CropStage:
    """Base of ``Classifier`` / ``Embedder``; subclasses set ``_post`` and ``_write``."""

    #: frames an object may go unseen before its cached result is dropped, beyond ``every``
    CACHE_TTL = 30
    #: most cached objects per stage (least recently seen are evicted)
    CACHE_SIZE = 4096

    def __init__(self, model: Any, *, size: Sequence[int] | int, on: Sequence[str | int] | None, min_size: float,
                 every: int, mean: Sequence[float], std: Sequence[float], name: str, kind: str,
                 crop: str = "box", fill: float | Sequence[float] = 114.0) -> None:
        if model is None:
            raise ValueError(f"{kind}: model is required (a path, an nn.Module or a callable)")
        try:
            sz = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        except (TypeError, IndexError, ValueError):
            raise ValueError(f"{kind}: size expected [w, h] or an int, got {size!r}") from None
        if sz[0] < 1 or sz[1] < 1:
            raise ValueError(f"{kind}: size must be positive, got {size!r}")
        if int(every) < 1:
            raise ValueError(f"{kind}: every must be >= 1, got {every}")
        if float(min_size) < 0:
            raise ValueError(f"{kind}: min_size must be >= 0, got {min_size}")
        if len(mean) != 3 or len(std) != 3 or any(float(s) == 0 for s in std):
            raise ValueError(f"{kind}: mean and std expected 3 values each (std non-zero), got {mean}, {std}")
        if crop not in ("box", "mask"):
            raise ValueError(f"{kind}: crop expected 'box' or 'mask', got {crop!r}")
        try:
            fv = (float(fill),) if isinstance(fill, (int, float)) else tuple(float(v) for v in fill)
        except (TypeError, ValueError):
            raise ValueError(f"{kind}: fill expected a number or three (R, G, B), got {fill!r}") from None
        if len(fv) not in (1, 3):
            raise ValueError(f"{kind}: fill expected a number or three (R, G, B), got {fill!r}")
        self.crop, self.fill = crop, (fv[0] if len(fv) == 1 else (fv[0], fv[1], fv[2]))
        self._warned_no_masks = False
        if on is not None and (isinstance(on, (str, int)) or not all(isinstance(c, (str, int)) for c in on)):
            raise ValueError(f"{kind}: on expected a list of class names or ids, got {on!r}")
        self.model, self.size, self.every, self.min_size = model, sz, int(every), float(min_size)
        self.on = None if on is None else tuple(on)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.name, self._kind = name, kind
        self._engine: Callable[[torch.Tensor], Any] | None = None
        self._device: torch.device | None = None
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None
        self._bank: torch.Tensor | None = None              # [CACHE_SIZE, D] cached results
        self._slot: dict[tuple[Any, int], int] = {}         # (source, object) -> bank row
        self._ran: dict[tuple[Any, int], int] = {}          # -> frame_num of the last run
        self._seen: dict[tuple[Any, int], int] = {}         # -> frame_num last seen
        self._free: list[int] = []
        self._dim: int | None = None                        # result size D, known after the first run
        self.runs = 0                                      # objects the model was run on (for tests/metrics)

    @property
    def reads_masks(self) -> bool:
        """Whether the stage reads the objects' masks (``crop="mask"``; ``stages.base.ReadsMasks``)."""
        return self.crop == "mask"

    # subclass hooks ---------------------------------------------------------------------------
    def _post(self, out: Any) -> torch.Tensor:
        """Model output for R crops -> results ``[R, D]`` float32."""
        raise NotImplementedError

    def _write(self, batch: Batch, res: torch.Tensor, valid: torch.Tensor) -> Batch:
        """Write results ``[N, D]`` (rows with ``valid[N] == False`` were not computed)."""
        raise NotImplementedError

    def _prepare(self, batch: Batch) -> None:
        """Called once, on the first batch (after the engine is loaded)."""

    # lifecycle ----------------------------------------------------------------------------------
    def reset(self, source_id: Any = None) -> None:
        """Drop the cached results of ``source_id`` (all when ``None``)."""
        for key in [k for k in {**self._seen, **self._slot} if source_id is None or k[0] == source_id]:
            self._drop(key)

    def close(self) -> None:
        self.reset()
        self._engine = None

    def _drop(self, key: tuple[Any, int]) -> None:
        slot = self._slot.pop(key, None)
        if slot is not None:
            self._free.append(slot)
        self._ran.pop(key, None)
        self._seen.pop(key, None)

    # the stage ------------------------------------------------------------------------------------
    def _ensure(self, batch: Batch) -> None:
        if self._engine is None or self._device != batch.device:
            self._device = batch.device
            self._engine = resolve_model(self.model, batch.device)
            m = const(list(self.mean), device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
            s = const(list(self.std), device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
            self._norm = (m * 255.0, s * 255.0)
            self._bank = None
            for book in (self._slot, self._ran, self._seen, self._free):
                book.clear()
            self._prepare(batch)

    def _eligible(self, batch: Batch) -> torch.Tensor:
        objs = batch.objects
        keep = torch.ones(len(objs), dtype=torch.bool, device=objs.device)
        if self.on is not None:
            names = batch.labels.get("objects", ())
            ids = set()
            for c in self.on:
                if isinstance(c, int):
                    ids.add(c)
                elif c in names:
                    ids.add(names.index(c))
                elif not names:
                    raise ValueError(f"{self._kind}(on={list(self.on)}): the batch has no class names "
                                     f"(labels['objects']); give class ids instead")
            keep &= torch.isin(objs.class_id, const(sorted(ids), device=objs.device, dtype=torch.int64))
        if self.min_size > 0:
            wh = objs.bbox[:, 2:] - objs.bbox[:, :2]
            keep &= (wh >= self.min_size).all(1)
        return keep

    def infer(self, crops: torch.Tensor) -> torch.Tensor:
        """Run the model on crops ``[R,3,h,w]`` float 0..255 -> results ``[R, D]``."""
        assert self._norm is not None and self._engine is not None     # made by _prepare on first use
        m, s = self._norm
        return self._post(self._engine((crops - m) / s))

    def _run(self, batch: Batch, idx: torch.Tensor) -> torch.Tensor:
        """Crop objects ``idx`` out of the batch images and run the model: ``[R, D]``."""
        objs = batch.objects
        fi, box = objs.frame_idx[idx], objs.bbox[idx]
        crops = crop_resize(batch.images, batch.source_to_image(box, fi), fi, self.size)
        if self.crop == "mask":
            if objs.masks is not None:
                crops = mask_fill(crops, objs.masks, idx, box, self.fill)
            elif not self._warned_no_masks:
                self._warned_no_masks = True
                warnings.warn(f"{self._kind} {self.name!r}: crop='mask' but the objects have no masks (a detect "
                              f"head, or the detector's masks: false): box crops are used", UserWarning,
                              stacklevel=2)
        res = self.infer(crops).float()
        self.runs += int(idx.shape[0])
        self._dim = int(res.shape[1])
        return res

    def _result_dim(self, dev: torch.device) -> int:
        if self._dim is None:  # nothing computed yet: learn the result size from one blank crop, once
            self._dim = int(self.infer(torch.zeros(1, 3, self.size[1], self.size[0], device=dev)).shape[1])
        return self._dim

    def __call__(self, batch: Batch) -> Batch:
        self._ensure(batch)
        objs = batch.objects
        n, dev = len(objs), batch.device
        keep = self._eligible(batch)
        if self.every == 1:   # no caching: every eligible object, no per-object Python
            idx = keep.nonzero().squeeze(1)
            res = self._run(batch, idx) if idx.shape[0] else None
            out = torch.zeros(n, self._result_dim(dev), dtype=torch.float32, device=dev)
            if res is not None:
                out[idx] = res
            return self._write(batch, out, keep)
        # one small host copy per batch: frame index, object id, eligibility
        host = torch.stack([objs.frame_idx, objs.object_id, keep.long()], 1).cpu().tolist()
        run, reuse, slots, cache_rows = [], [], [], []
        copy_dst, copy_src = [], []  # reuse of a result computed earlier in this same batch
        pending: dict[tuple[Any, int], tuple[int, int]] = {}  # key -> (frame_num, position in run)
        latest: dict[Any, int] = {}
        for r, (fi, oid, ok) in enumerate(host):
            if not ok:
                continue
            info = batch.frames[fi]
            if oid < 0:
                run.append(r)
                continue
            key = (info.source_id, oid)
            fn = info.frame_num
            latest[info.source_id] = max(fn, latest.get(info.source_id, fn))
            self._seen[key] = fn
            if key in pending and 0 <= fn - pending[key][0] < self.every:
                copy_dst.append(r)
                copy_src.append(pending[key][1])
                continue
            last = self._ran.get(key)
            if key not in pending and last is not None and 0 <= fn - last < self.every and key in self._slot:
                reuse.append(r)
                slots.append(self._slot[key])
            else:
                pending[key] = (fn, len(run))
                run.append(r)
                cache_rows.append((len(run) - 1, key, fn))
        res = None
        if run:
            idx = const(run, device=dev, dtype=torch.int64)
            res = self._run(batch, idx)
        dim = self._result_dim(dev)
        out = torch.zeros(n, dim, dtype=torch.float32, device=dev)
        valid = torch.zeros(n, dtype=torch.bool, device=dev)
        if res is not None:
            out[idx] = res
            valid[idx] = True
        if reuse:
            assert self._bank is not None                # a reused slot is in the bank
            ridx = const(reuse, device=dev, dtype=torch.int64)
            out[ridx] = self._bank[const(slots, device=dev, dtype=torch.int64)]
            valid[ridx] = True
        if copy_dst:
            assert res is not None                       # copies are of rows run in this batch
            cidx = const(copy_dst, device=dev, dtype=torch.int64)
            out[cidx] = res[const(copy_src, device=dev, dtype=torch.int64)]
            valid[cidx] = True
        if cache_rows:
            assert res is not None
            # several runs of one key in a batch: the last one wins (rows are in frame order)
            self._store(res, cache_rows, dim, dev)
        self._prune(latest)
        return self._write(batch, out, valid)

    def _store(self, res: torch.Tensor, rows: list[tuple[int, tuple[Any, int], int]], dim: int,
               dev: torch.device) -> None:
        if self._bank is None or self._bank.shape[1] != dim:
            self._bank = torch.zeros(self.CACHE_SIZE, dim, dtype=torch.float32, device=dev)
            self._free = list(range(self.CACHE_SIZE - 1, -1, -1))
            self._slot.clear()
            self._ran.clear()
        last = {key: (j, fn) for j, key, fn in rows}  # a key run twice in one batch: the later run wins
        src, dst = [], []
        for key, (j, fn) in last.items():
            if key not in self._slot:
                if not self._free:  # full: evict the least recently seen object not in this batch
                    old = [k for k in self._slot if k not in last]
                    if not old:
                        continue  # more objects in one batch than the cache holds: not cached
                    self._drop(min(old, key=lambda k: self._seen.get(k, -1)))
                self._slot[key] = self._free.pop()
            self._ran[key] = fn
            src.append(j)
            dst.append(self._slot[key])
        if dst:
            self._bank[const(dst, device=dev, dtype=torch.int64)] = res[const(src, device=dev, dtype=torch.int64)]

    def _prune(self, latest: dict[Any, int]) -> None:
        ttl = self.every + self.CACHE_TTL
        for key in [k for k, fn in self._seen.items() if k[0] in latest and latest[k[0]] - fn > ttl]:
            self._drop(key)

