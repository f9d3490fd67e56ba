"""User stages for examples/user_code.yaml: any callable ``Batch -> Batch``."""

from __future__ import annotations

from vidflow import Batch

MIN_AREA = 400.0   # square source pixels


def drop_small(batch: Batch) -> Batch:
    """Keep only objects whose box covers at least MIN_AREA source pixels."""
    objs = batch.objects
    wh = objs.bbox[:, 2:] - objs.bbox[:, :2]
    return batch.replace(objects=objs[wh[:, 0] * wh[:, 1] >= MIN_AREA])
