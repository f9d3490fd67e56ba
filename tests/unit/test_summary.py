"""RunSummary: a readable str/repr (percentiles, not the raw latencies), objects per class and
tracks per source from delivered batches, output paths; Batch.to_pandas has read_jsonl's columns."""

from __future__ import annotations

import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.sinks.jsonl import JsonlSink
from vidflow.stats import RunSummary, SourceStats
from vidflow.tables import read_jsonl


def _batch():
    objs = Objects.create(frame_idx=torch.tensor([0, 0, 1, 1, 1]),
                          bbox=torch.tensor([[0, 0, 10, 10.0]]).repeat(5, 1),
                          class_id=torch.tensor([0, 1, 1, 1, 5]), object_id=torch.tensor([3, 4, 4, -1, 9]))
    return Batch(images=torch.zeros(2, 3, 16, 16, dtype=torch.uint8),
                 frames=(FrameInfo("lobby", 0, 0.0, width=16, height=16), FrameInfo("door", 0, 0.0, width=16, height=16)),
                 objects=objs, labels={"objects": ("box", "disc")})


def test_summary_counts_classes_tracks_and_outputs(tmp_path):
    s = RunSummary(batches=1, wall_s=2.0)
    s.sources["lobby"] = SourceStats("lobby", "cam1.mp4", frames=1, state="ended")
    s.sources["door"] = SourceStats("door", "rtsp://h/s", frames=1, state="ended")
    s.latencies_ms.extend(float(i) for i in range(100_000))
    s.note_batch(_batch())
    s.note_outputs([JsonlSink(tmp_path / "o.jsonl"), object()])
    assert dict(s.classes["lobby"]) == {"box": 1, "disc": 1} and dict(s.classes["door"]) == {"disc": 2, "5": 1}
    assert s.tracks == {"lobby": {3, 4}, "door": {4, 9}}
    text, rep = str(s), repr(s)
    assert "p50 50000" in text and "p99 99000" in text and "lobby: ended, 1 frames" in text
    assert "3 objects (disc 2, 5 1), 2 tracks" in text and f"outputs: {tmp_path / 'o.jsonl'}" in text
    assert "[rtsp://h/s]" in text and len(text) < 1000 and len(rep) < 400   # not 100,000 numbers
    assert rep.startswith("RunSummary(frames=2, sources=2") and "p95=95000.0" in rep
    assert "objects lobby: box 1, disc 1; 2 tracks" in s.table()


def test_summary_of_an_empty_run_prints():
    s = RunSummary()
    assert "0 frames from 0 source(s)" in str(s) and "latency_ms={}" in repr(s)
    s.note_batch(Batch(images=torch.zeros(1, 3, 4, 4, dtype=torch.uint8), frames=(FrameInfo(0, 0, 0.0),)))
    assert s.classes == {}


def test_to_pandas_has_read_jsonl_columns(tmp_path):
    pytest.importorskip("pandas")
    b = _batch()
    df = b.to_pandas()
    with JsonlSink(tmp_path / "o.jsonl") as sink:
        sink.write(b)
    back = read_jsonl(tmp_path / "o.jsonl")
    assert list(df.columns) == list(back.columns)
    import vidflow
    assert vidflow.read_jsonl is read_jsonl and callable(vidflow.export_module)   # public names
    assert len(df) == 5 and df["label"].tolist() == ["box", "disc", "disc", "disc", "5"]
    assert df["source_id"].tolist() == ["lobby", "lobby", "door", "door", "door"]
    assert df["x2"].tolist() == [10.0] * 5 and df["width"].tolist() == [16] * 5


def test_a_run_fills_the_class_and_track_counts_and_lists_its_outputs(tmp_path):
    from vidflow.mux import Muxer
    from vidflow.pipeline import Pipeline
    from vidflow.testing import FakeSource

    def objects(batch):                      # two objects per frame: class 0 (id 7) and class 1 (untracked)
        n = len(batch)
        return batch.replace(objects=Objects.create(
            frame_idx=torch.arange(n).repeat_interleave(2), bbox=torch.tensor([[0, 0, 4, 4.0]]).repeat(2 * n, 1),
            class_id=torch.tensor([0, 1]).repeat(n), object_id=torch.tensor([7, -1]).repeat(n)),
            labels={**batch.labels, "objects": ("box", "disc")})

    out = tmp_path / "o.jsonl"
    s = Pipeline([FakeSource(6), FakeSource(4)], muxer=Muxer(batch_size=4, max_wait_ms=5), stages=[objects],
                 sinks=[JsonlSink(out)], device="cpu").run()
    assert {k: dict(v) for k, v in s.classes.items()} == {0: {"box": 6, "disc": 6}, 1: {"box": 4, "disc": 4}}
    assert s.tracks == {0: {7}, 1: {7}} and s.outputs == [str(out)]
