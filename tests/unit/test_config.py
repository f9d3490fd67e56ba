import json
import os
import sys
import textwrap

import pytest

from vidflow.config import apply_overrides, build_parts, load_config
from vidflow.errors import ConfigError
from vidflow.pipeline import Pipeline


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
device: cpu
sources:
  - "vidflow.testing:FakeSource": {frames: 5, width: 48, height: 32}
  - "vidflow.testing:FakeSource": 3
muxer: {batch_size: 2, max_wait_ms: 10, size: [16, 12]}
stages:
  - call: tests.unit.test_config:tag
sinks:
  - jsonl: {path: OUT}
"""


ALLOW = ["vidflow.testing", "tests.unit.test_config", "nope"]


def build(cfg, allow=ALLOW):
    return build_parts(cfg, allow_code=allow)


def tag(batch):
    return batch.with_tensors(**{"tag.x": batch.images[:, 0, 0, 0].float()})


def test_from_yaml_runs(tmp_path):
    out = tmp_path / "o" / "f.jsonl"
    p = write(tmp_path, GOOD.replace("OUT", str(out)))
    pipe = Pipeline.from_yaml(str(p), allow_code=ALLOW)
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
    # issue 21: strict types, no coercion, the key named by the validation itself
    ("sources: [{file: {path: a.mp4, loop: 'false'}}]\n", "sources[0].file.loop", 'expected bool, got "false"'),
    ("sources: [{file: a.mp4}]\nmuxer: {batch_size: 4.5}\n", "muxer.batch_size", "expected int, got 4.5"),
    ("sources: [{file: a.mp4}]\nmuxer: {batch_size: eight}\n", "muxer.batch_size", 'expected int, got "eight"'),
    ("sources: [{file: a.mp4}]\nmuxer: {batch_size: true}\n", "muxer.batch_size", "expected int, got true"),
    ("sources: [{file: a.mp4}]\nstages: [{detect: {conf: high}}]\n", "stages[0].detect.conf",
     'expected float | list[float], got "high"'),
    ("sources: [{file: a.mp4}]\nstages: [{detect: {conf: 1e-3}}]\n", "stages[0].detect.conf", "write 0.001"),
    ("sources: [{file: a.mp4}]\nstages: [{track: {max_age: '30'}}]\n", "stages[0].track.max_age",
     'expected int, got "30"'),
    ("sources: [{file: {path: a.mp4, decoder: gpu}}]\n", "sources[0].file.decoder",
     "expected 'auto' | 'nvdec' | 'ffmpeg', got \"gpu\""),
    ("sources: [{file: a.mp4}]\nsinks: [{video: {path: v.mp4, size: [640, x]}}]\n", "sinks[0].video.size",
     'expected [int, int] | list[int] | null, got [640, "x"]'),
    ("sources: [{file: a.mp4}]\nqueue_size: 0\n", "queue_size", "expected >= 1, got 0"),
    ("sources: [{file: a.mp4}]\nstrict: 'no'\n", "strict", 'expected bool, got "no"'),
    ("sources: [{file: a.mp4}]\ntorch_threads: 2.5\n", "torch_threads", "expected int | null, got 2.5"),
    ("sources: [{file: missing.mp4}]\n", "sources[0].file.path", "file not found: missing.mp4"),
    ("sources: [{file: a.mp4, id: [1]}]\n", "sources[0].id", "expected int | str"),
    ("sources: [{file: a.mp4, id: x}, {file: a.mp4, id: x}]\n", "sources[1].id", "used twice"),
    ("sources: [{synthetic: {frames: 2, fps: fast}}]\n", "sources[0].synthetic.fps", 'expected float, got "fast"'),
    ("sources: [{file: a.mp4}]\nstages: [{'os:system': 'echo hi'}]\n", "stages[0].os:system",
     "is user code, and a YAML runs none unless the run allows it: pass --allow-code os"),
    ("sources: [{file: a.mp4}]\nstages: [{call: 'os:system'}]\n", "stages[0].call", "--allow-code os"),
    ("sources: [{file: a.mp4}]\nsinks: [{jsonl: {path: a.mp4/x.jsonl}}]\n", "sinks[0].jsonl.path", "is a file, not a folder"),
    ("sources: [{file: a.mp4}]\nsinks: [{video: {path: v.mp4, encoder: nvenc}}]\n", "sinks[0].video",
     "encoder='nvenc' is not available"),
])
def test_errors_name_yaml_path(tmp_path, monkeypatch, text, path, msg):
    monkeypatch.chdir(tmp_path)   # sink paths are relative to the working directory
    (tmp_path / "a.mp4").write_bytes(b"")
    with pytest.raises(ConfigError) as ei:
        build(load_config(write(tmp_path, text)))
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
    pipe = Pipeline.from_yaml(str(p), allow_code=ALLOW)
    assert pipe.decode_processes == 1 and pipe.overlap
    pipe.run()
    assert len(out.read_text().splitlines()) == 8
    with pytest.raises(ConfigError, match="decode_processes"):
        build(load_config(write(tmp_path, GOOD.replace("OUT", str(out)) + "decode_processes: -2\n")))


def test_user_code_is_not_imported_without_allow(tmp_path, monkeypatch):
    """A YAML naming code runs nothing: neither `os:system` nor a module next to the YAML."""
    monkeypatch.delenv("VIDFLOW_ALLOW_CODE", raising=False)
    marker = tmp_path / "ran"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef fn(batch):\n    return batch\n")
    for stage in (f"'os:system': 'touch {marker}'", "call: 'os:system'", "'evilmod:fn': {}", "call: evilmod:fn"):
        p = write(tmp_path, f"sources: [{{synthetic: {{frames: 1}}}}]\nstages: [{{{stage}}}]\n")
        with pytest.raises(ConfigError, match="--allow-code") as ei:
            Pipeline.from_yaml(str(p))
        assert ei.value.path.startswith("stages[0].")
    assert not marker.exists() and "evilmod" not in sys.modules


def test_allowed_code_next_to_the_yaml(tmp_path, monkeypatch):
    """`call: mymod:fn` beside the YAML works once allowed (flag or env), without PYTHONPATH."""
    (tmp_path / "cfgmod_a.py").write_text("def mark(batch):\n    return batch.with_tensors(**{'m.x': batch.images[:, 0, 0, 0].float()})\n")
    out = tmp_path / "o.jsonl"
    p = write(tmp_path, f"device: cpu\nsources: [{{synthetic: {{width: 48, height: 32, frames: 3}}, id: cam}}]\n"
                        f"stages: [{{call: cfgmod_a:mark}}]\nsinks: [{{jsonl: {out}}}]\n")
    monkeypatch.setenv("VIDFLOW_ALLOW_CODE", "somethingelse, cfgmod_a")
    pipe = Pipeline.from_yaml(str(p))
    pipe.run()
    assert [json.loads(x)["source_id"] for x in out.read_text().splitlines()] == ["cam"] * 3
    monkeypatch.delenv("VIDFLOW_ALLOW_CODE")
    with pytest.raises(ConfigError, match=r"allow-code cfgmod_a .*the YAML's folder"):
        Pipeline.from_yaml(str(p))
    with pytest.raises(ConfigError, match="No module named 'cfgmod_zz'.*the YAML's folder"):
        Pipeline.from_yaml(str(write(tmp_path, "sources: [{synthetic: {frames: 1}}]\nstages: [{call: cfgmod_zz:f}]\n")),
                           allow_code="cfgmod_zz")
    with pytest.raises(ConfigError, match="module names separated by commas"):
        Pipeline.from_yaml(str(p), allow_code=["not a module"])


def test_source_ids_settings_and_set_override(tmp_path):
    p = write(tmp_path, "device: cpu\ntorch_threads: 1\nqueue_size: 4\nsources:\n"
                        "  - synthetic: {width: 48, height: 32, frames: 2}\n    id: lobby\n"
                        "  - synthetic: {width: 48, height: 32, frames: 2}\n"
                        "stages: [{detect: {model: demo, conf: 0.5}}]\n")
    parts = build(load_config(p))
    assert list(parts.sources) == ["lobby", 1] and parts.settings == {"device": "cpu", "torch_threads": 1, "queue_size": 4}
    assert [x.path for x in parts.parts] == ["sources[0].synthetic", "sources[1].synthetic", "muxer", "stages[0].detect"]
    with pytest.raises(ConfigError) as ei:
        build(load_config(p, ["detect.conf=abc"]))
    assert ei.value.path == "stages[0].detect.conf" and 'expected float | list[float], got "abc"' in str(ei.value)
    with pytest.raises(ConfigError, match="not a known setting|does not take") as ei:
        parts.kwargs(accepted=["sources", "muxer", "stages", "sinks", "device", "queue_size"])
    assert ei.value.path == "torch_threads"


def _model_yaml(tmp_path, model, extra=""):
    return write(tmp_path, f"sources: [{{synthetic: {{frames: 1}}}}]\nstages: [{{detect: {{model: {model}{extra}}}}}]\n")


def test_models_checked_before_start(tmp_path, monkeypatch):
    import torch

    def err(model, extra=""):
        with pytest.raises(ConfigError) as ei:
            build(load_config(_model_yaml(tmp_path, model, extra)))
        assert ei.value.path == "stages[0].detect.model"
        return str(ei.value)

    assert "model file not found: yolo11n.onnx" in err("yolo11n.onnx")
    assert "unknown model file type '.h5'" in err("m.h5")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "ckpt.pt")   # a pickle: refused, never loaded
    msg = err("ckpt.pt")
    assert "pickled PyTorch checkpoint" in msg and "yolo export model=ckpt.pt format=onnx" in msg
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")   # TorchScript: past the check
    with pytest.raises(ConfigError) as ei:
        build(load_config(_model_yaml(tmp_path, "ts.pt", ", format: yolov9")))
    assert ei.value.path == "stages[0].detect.format"
    (tmp_path / "m.onnx").write_bytes(b"")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert "pip install 'vidflow[onnx]'" in err("m.onnx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: the 'is a file' case covers the check")
def test_unwritable_sink_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable") as ei:
        build(load_config(write(tmp_path, f"sources: [{{synthetic: {{frames: 1}}}}]\nsinks: [{{jsonl: {ro}/x/f.jsonl}}]\n")))
    assert ei.value.path == "sinks[0].jsonl.path"


def test_scalar_checks_never_coerce():
    """Over any YAML-like value: int takes ints only (not bools, floats or text), float takes
    ints and floats, bool only booleans, str only text; a refusal names the path."""
    from hypothesis import given
    from hypothesis import strategies as st

    from vidflow._validate import check

    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                     max_size=3), max_leaves=5)
    accepts = {int: lambda v: type(v) is int, float: lambda v: type(v) in (int, float), bool: lambda v: type(v) is bool,
               str: lambda v: type(v) is str, list[int] | None: lambda v: v is None or (
                   type(v) is list and all(type(x) is int for x in v))}

    @given(values)
    def run(v):
        for ann, ok in accepts.items():
            if ok(v):
                check(v, ann, "k")
            else:
                with pytest.raises(ConfigError) as ei:
                    check(v, ann, "a.k")
                assert ei.value.path == "a.k" and "expected" in str(ei.value)

    run()
