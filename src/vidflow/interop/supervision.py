"""``supervision.Detections`` <-> vidflow ``Objects`` (``pip install supervision``; optional).

:func:`to_detections` gives one frame's objects as ``sv.Detections`` (``xyxy``, ``confidence``,
``class_id``, ``tracker_id`` (None when untracked), ``mask`` as full-frame ``[N, H, W]`` bool
when the objects have masks, ``data["class_name"]`` and ``data["keypoints"]``);
:func:`from_detections` builds ``Objects`` of one frame back (box-cropped masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..batch import Batch, Objects
from ..ops.masks import Masks

__all__ = ["to_detections", "from_detections"]


def _sv() -> Any:
    try:
        import supervision as sv
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("the supervision adapter needs supervision: pip install supervision") from e
    return sv


def to_detections(batch: Batch, frame: int = 0) -> Any:
    """The objects of frame ``frame`` of ``batch`` as ``supervision.Detections`` (NumPy, host)."""
    sv = _sv()
    o = batch.objects.for_frame(frame).to("cpu")
    f = batch.frames[frame]
    w, h = f.width or batch.size[0], f.height or batch.size[1]
    names = batch.labels.get("objects", ())
    cls = o.class_id.numpy().astype(int)
    data: dict[str, Any] = {"class_name": np.array([names[c] if 0 <= c < len(names) else str(c) for c in cls])}
    if o.keypoints is not None:
        data["keypoints"] = o.keypoints.numpy()
    tracked = bool(len(o)) and bool((o.object_id >= 0).all())
    return sv.Detections(xyxy=o.bbox.numpy().astype(np.float32),
                         mask=o.masks.full(w, h).numpy() if o.masks is not None else None,
                         confidence=o.confidence.numpy(), class_id=cls,
                         tracker_id=o.object_id.numpy().astype(int) if tracked else None, data=data)


def from_detections(det: Any, *, frame_idx: int = 0, device: torch.device | str = "cpu",
                    labels: Sequence[str] | None = None) -> Objects:
    """``supervision.Detections`` of one frame -> ``Objects`` (``frame_idx`` for all rows).
    ``class_id`` missing: from ``data["class_name"]`` through ``labels``, else 0."""
    xyxy = torch.as_tensor(np.asarray(det.xyxy, dtype=np.float32)).reshape(-1, 4)
    n = xyxy.shape[0]
    cls = None
    if det.class_id is not None:
        cls = torch.as_tensor(np.asarray(det.class_id, dtype=np.int64))
    elif labels is not None and "class_name" in getattr(det, "data", {}):
        cls = torch.tensor([list(labels).index(str(c)) if str(c) in labels else -1 for c in det.data["class_name"]])
    conf = None if det.confidence is None else torch.as_tensor(np.asarray(det.confidence, dtype=np.float32))
    tid = None if det.tracker_id is None else torch.as_tensor(np.asarray(det.tracker_id, dtype=np.int64))
    masks = None
    if det.mask is not None and n:
        full = torch.as_tensor(np.asarray(det.mask, dtype=bool))
        lo = torch.ceil(xyxy[:, :2]).clamp(min=0).long()
        hi = torch.minimum(torch.ceil(xyxy[:, 2:]).long(), torch.tensor([full.shape[2], full.shape[1]]))
        ext = (hi - lo).clamp(min=0)
        mw, mh = int(ext[:, 0].max()), int(ext[:, 1].max())
        data = torch.zeros(n, mh, mw, dtype=torch.bool)
        for i in range(n):      # host-side adapter: one slice per object
            (x0, y0), (ew, eh) = lo[i].tolist(), ext[i].tolist()
            data[i, :eh, :ew] = full[i, y0:y0 + eh, x0:x0 + ew]
        masks = Masks(data, lo)
    kp = getattr(det, "data", {}).get("keypoints")
    objs = Objects.create(frame_idx=torch.full((n,), int(frame_idx)), bbox=xyxy, confidence=conf, class_id=cls,
                          object_id=tid, masks=masks,
                          keypoints=None if kp is None else torch.as_tensor(np.asarray(kp, dtype=np.float32)))
    return objs.to(device)
