"""Flat tables: read_jsonl (both formats) and batch_to_frame give one row per object with the
frame's columns; the Parquet sink writes the same rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit._sinkdata import batches
from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.sinks.jsonl import JsonlSink
from vidflow.tables import batch_to_frame, read_jsonl

pd = pytest.importorskip("pandas")


def _with_classifier():
    b = next(batches(1, sources=2, per_source=1, objects=2))
    n = len(b.objects)
    objs = Objects.create(frame_idx=b.objects.frame_idx, bbox=b.objects.bbox, class_id=b.objects.class_id,
                          object_id=b.objects.object_id, confidence=b.objects.confidence,
                          attrs={**b.objects.attrs, "color.label": torch.tensor([1, 0, 1, 1]),
                                 "color.confidence": torch.tensor([0.9, 0.8, 0.7, 0.6])})
    assert n == 4
    empty = FrameInfo(2, 0, 0.0, 0, 320, 240)
    return Batch(images=torch.zeros(3, 3, 8, 8, dtype=torch.uint8), frames=(*b.frames, empty), objects=objs,
                 labels={**b.labels, "color": ("red", "blue")})


@pytest.mark.parametrize("fmt", ["jsonl", "vidflow.v1"])
def test_read_jsonl_flat(tmp_path, fmt):
    b = _with_classifier()
    with JsonlSink(tmp_path / "o.jsonl", format=fmt) as s:
        s.write(b)
        s.end_source(0)
    df = read_jsonl(tmp_path / "o.jsonl")
    assert len(df) == 4 and list(df["source_id"]) == [0, 0, 1, 1]
    assert list(df["label"]) == ["box", "disc", "box", "disc"] and list(df["color.label"]) == ["blue", "red", "blue", "blue"]
    assert df["x2"].iloc[1] == pytest.approx(40.5) and df["width"].iloc[0] == 640
    assert np.allclose(df["embed.vector"].iloc[1], np.arange(8, 16))
    full = read_jsonl(tmp_path / "o.jsonl", frames_without_objects=True)
    assert len(full) == 5 and full["label"].isna().sum() == 1 and full["source_id"].iloc[-1] == 2


def test_batch_to_frame_matches_read_jsonl(tmp_path):
    b = _with_classifier()
    df = batch_to_frame(b)
    with JsonlSink(tmp_path / "o.jsonl") as s:
        s.write(b)
    back = read_jsonl(tmp_path / "o.jsonl")
    for c in ("source_id", "frame_num", "label", "object_id", "class_id", "color.label"):
        assert list(df[c]) == list(back[c]), c
    assert np.allclose(df["x1"], back["x1"]) and np.allclose(df["confidence"], back["confidence"], atol=1e-4)


def test_parquet_sink_rows(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from vidflow.sinks.parquet import ParquetSink

    with ParquetSink(tmp_path / "o.parquet", row_group_rows=10, frames_without_objects=True) as s:
        for b in batches(4):
            s.write(b)
        s.write(_with_classifier())          # color.* appear later: left out, empty frame kept
    t = pq.read_table(tmp_path / "o.parquet").to_pandas()
    assert len(t) == 4 * 4 * 3 + 4 + 1 == s.rows
    assert "color.label" not in t.columns and t["label"].isna().sum() == 1
    assert list(t["frame_num"][:6]) == [0, 0, 0, 1, 1, 1]
    assert np.allclose(np.stack(t["embed.vector"][:2]), np.arange(16).reshape(2, 8))
