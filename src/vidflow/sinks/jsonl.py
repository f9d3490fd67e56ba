"""``JsonlSink``: one JSON line per frame.

Schema (DESIGN.md)::

    {"source_id": 0, "frame_num": 12, "pts": 0.4, "width": 1920, "height": 1080,
     "objects": [{"bbox": [x1, y1, x2, y2], "class_id": 1, "label": "disc", "confidence": 0.93,
                  "object_id": 4, "attrs": {"color.label": "red", "embed.vector": [...]}}]}

Boxes are in source pixels. The object table crosses to the host once per batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import torch

from ..batch import TRACKER_BBOX, Batch
from ..errors import SinkError

__all__ = ["JsonlSink", "frame_records"]


def _round(x: Any, nd: int) -> Any:
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, list):
        return [_round(v, nd) for v in x]
    return x


def frame_records(batch: Batch, *, attrs: bool = True, decimals: int = 2) -> list[dict[str, Any]]:
    """The JSON-ready records of a batch, one per frame in batch order."""
    objs = batch.objects
    names = batch.labels.get("objects", ())
    # one host transfer for the whole table (float64 holds the int64 ids exactly below 2**53)
    table = torch.cat([objs.frame_idx[:, None].double(), objs.bbox.double(), objs.class_id[:, None].double(),
                       objs.confidence[:, None].double(), objs.object_id[:, None].double()], 1).cpu().numpy()
    host = {"frame_idx": table[:, 0].astype(int).tolist(), "bbox": table[:, 1:5].astype("float32").tolist(),
            "class_id": table[:, 5].astype(int).tolist(), "confidence": table[:, 6].astype("float32").tolist(),
            "object_id": table[:, 7].astype(int).tolist()}
    extra: dict[str, list] = {}
    if attrs:
        for key, v in objs.attrs.items():
            if key == TRACKER_BBOX:
                continue
            vals = v.detach().cpu()
            vals = vals.float() if vals.is_floating_point() else vals
            lst = vals.tolist()
            stage = key.rsplit(".", 1)[0]
            if key.endswith(".label") and stage in batch.labels:
                lab = batch.labels[stage]
                lst = [lab[i] if isinstance(i, int) and 0 <= i < len(lab) else i for i in lst]
            extra[key] = lst
    per_frame: list[list[dict]] = [[] for _ in batch.frames]
    nd, nn = decimals, len(names)
    # the hot loop of the sink (~700 objects per batch of 64): plain round() on each value, as
    # _round would, without its recursion
    for j, (fi, b, cid, conf, oid) in enumerate(zip(host["frame_idx"], host["bbox"], host["class_id"],
                                                    host["confidence"], host["object_id"])):
        o = {"bbox": [round(b[0], nd), round(b[1], nd), round(b[2], nd), round(b[3], nd)], "class_id": cid,
             "label": names[cid] if 0 <= cid < nn else str(cid), "confidence": round(conf, 4), "object_id": oid}
        if extra:
            o["attrs"] = {k: _round(v[j], 4) for k, v in extra.items()}
        per_frame[fi].append(o)
    return [{"source_id": f.source_id, "frame_num": f.frame_num, "pts": round(f.pts, 6), "width": f.width,
             "height": f.height, "objects": per_frame[i]} for i, f in enumerate(batch.frames)]


class JsonlSink:
    """Writes one line per frame to ``path`` (parent folders created). Lines of one source come
    in frame order; the file is flushed after every batch and closed by :meth:`close`.

    Args:
        path: output file.
        attrs: include per-object attributes (embeddings, classifier labels...) under ``"attrs"``.
        decimals: rounding of box coordinates.
    """

    def __init__(self, path: str | Path, *, attrs: bool = True, decimals: int = 2) -> None:
        self.path = Path(path)
        self.attrs = bool(attrs)
        self.decimals = int(decimals)
        self._f: IO[str] | None = None
        self.lines = 0

    def write(self, batch: Batch) -> None:
        if self._f is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as e:
                raise SinkError(f"jsonl: cannot open {self.path}: {e}") from e
        with torch.no_grad():
            recs = frame_records(batch, attrs=self.attrs, decimals=self.decimals)
        self._f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs))
        self._f.flush()
        self.lines += len(recs)

    def close(self) -> None:
        if self._f is None:        # nothing written: still leave an (empty) file behind
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            return
        self._f.close()
        self._f = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
