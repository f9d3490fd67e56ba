import json
import textwrap

import pytest

from vidflow.config import apply_overrides, build_pipeline, load_config
from vidflow.errors import ConfigError
from vidflow.pipeline import Pipeline


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
device: cpu
sources:
  - "vidflow.testing:FakeSource": {frames: 5, width: 32, height: 24}
  - "vidflow.testing:FakeSource": 3
muxer: {batch_size: 2, max_wait_ms: 10, size: [16, 12]}
stages:
  - call: tests.unit.test_config:tag
sinks:
  - jsonl: {path: OUT}
"""


def tag(batch):
    return batch.with_tensors(**{"tag.x": batch.images[:, 0, 0, 0].float()})


def test_from_yaml_runs(tmp_path):
    out = tmp_path / "o" / "f.jsonl"
    p = write(tmp_path, GOOD.replace("OUT", str(out)))
    pipe = Pipeline.from_yaml(str(p))
    assert pipe.muxer.batch_size == 2 and pipe.device.type == "cpu"
    pipe.run()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted((r["source_id"], r["frame_num"]) for r in lines) == [(0, i) for i in range(5)] + [(1, i) for i in range(3)]


def test_overrides(tmp_path):
    p = write(tmp_path, GOOD.replace("OUT", str(tmp_path / "x.jsonl")))
    cfg = load_config(p, ["muxer.batch_size=7", "sources[0].vidflow.testing:FakeSource.frames=2",
                          "muxer.size=[64, 48]"])
    assert cfg["muxer"]["batch_size"] == 7 and cfg["muxer"]["size"] == [64, 48]
    cfg = apply_overrides({"stages": [{"detect": {"conf": 0.2}}, {"track": {}}]}, ["detect.conf=0.5", "track.max_age=9"])
    assert cfg["stages"][0]["detect"]["conf"] == 0.5 and cfg["stages"][1]["track"]["max_age"] == 9
    cfg = apply_overrides({"stages": [{"detect": {}}]}, ["stages.0.detect.iou=0.6"])
    assert cfg["stages"][0]["detect"]["iou"] == 0.6


@pytest.mark.parametrize("text,path,msg", [
    ("sources: [{file: a.mp4}]\nbogus: 1\n", "bogus", "unknown top-level key"),
    ("sources: [{camera: a.mp4}]\n", "sources[0].camera", "unknown kind 'camera'; allowed: file, synthetic"),
    ("sources: [{'vidflow.testing:FakeSource': {frame: 3}}]\n", "sources[0].vidflow.testing:FakeSource.frame",
     "unknown key 'frame'; allowed: frames"),
    ("sources: [{'vidflow.testing:FakeSource': 1}]\nmuxer: {batch_size: 0}\n", "muxer", "batch_size must be >= 1"),
    ("sources: [{'vidflow.testing:FakeSource': 1}]\nmuxer: {batchsize: 4}\n", "muxer.batchsize", "allowed: batch_size"),
    ("sources: [{'vidflow.testing:FakeSource': 1}]\nstages: [{call: nope.nothing:fn}]\n", "stages[0].call",
     "cannot import"),
    ("sources: [{'vidflow.testing:FakeSource': 1}]\ndevice: tpu\n", "device", "expected 'auto', 'cpu'"),
    ("sources: []\n", "sources", "at least one source"),
    ("sources: [{'vidflow.testing:FakeSource': 1, 'x': 2}]\n", "sources[0]", "expected one 'kind: arguments'"),
])
def test_errors_name_yaml_path(tmp_path, text, path, msg):
    with pytest.raises(ConfigError) as ei:
        build_pipeline(load_config(write(tmp_path, text)))
    assert ei.value.path == path and msg in str(ei.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="PATH=VALUE"):
        load_config(write(tmp_path, "sources: []\n"), ["muxer.batch_size"])
    with pytest.raises(ConfigError, match="kind of exactly one item"):
        apply_overrides({"stages": []}, ["detect.conf=0.3"])


def test_decode_processes_and_overlap_from_yaml(tmp_path):
    out = tmp_path / "d.jsonl"
    p = write(tmp_path, GOOD.replace("OUT", str(out)) + "decode_processes: 1\noverlap: true\n")
    pipe = Pipeline.from_yaml(str(p))
    assert pipe.decode_processes == 1 and pipe.overlap
    pipe.run()
    assert len(out.read_text().splitlines()) == 8
    with pytest.raises(ConfigError, match="decode_processes"):
        build_pipeline(load_config(write(tmp_path, GOOD.replace("OUT", str(out)) + "decode_processes: -2\n")))
