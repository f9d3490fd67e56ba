"""vidflow.consume on a file: de-duplication by (source-id, seq), columnar form, callable module."""

from __future__ import annotations

import orjson
import torch

import vidflow.consume
from tests.unit._sinkdata import batches
from vidflow.sinks.encoders import make_encoder
from vidflow.sinks.records import host_frames
from vidflow.translate import from_frames, to_frames


def test_dedup_and_columns(tmp_path):
    enc, seen = make_encoder("vidflow.v1"), {}

    def seq(s):
        seen[s] = seen.get(s, -1) + 1
        return seen[s]
    b = next(batches(1, sources=2, per_source=2))
    lines = [p for _, p in enc.encode(host_frames(b), seq)]
    replay = lines[:2] + lines[1:] + lines[3:]           # an at-least-once replay: 2 duplicates
    f = tmp_path / "m.jsonl"
    f.write_bytes(b"\n".join(replay) + b"\n")
    assert len(list(vidflow.consume(str(f), dedup=False))) == 6
    msgs = list(vidflow.consume(str(f), columns=True))
    assert [(m["source-id"], m["seq"]) for m in msgs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    got, ref = from_frames(msgs), from_frames(to_frames(b))
    assert torch.equal(got.bbox, ref.bbox) and torch.equal(got.frame_idx, ref.frame_idx)
    assert orjson.loads(lines[0])["num-objects"] == 3
