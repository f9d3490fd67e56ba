"""Every pipeline in examples/ runs (CPU, small generated clips) and writes what it says."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vidflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
FRAMES = 12
#: what each example writes (relative to the working directory), and the sources it reads
OUTPUTS = {
    "detect_track.yaml": (["out/examples/detect_track.jsonl"], {"cam1": FRAMES, "cam2": FRAMES}),
    "annotated_video.yaml": (["out/examples/annotated.jsonl", "out/examples/annotated.mp4"], {0: FRAMES, 1: FRAMES}),
    "user_code.yaml": (["out/examples/user_code.jsonl"], {0: FRAMES}),
    "synthetic.yaml": (["out/examples/synthetic.jsonl"], {"a": 30, "b": 30}),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of examples/ with its clips generated small (examples/make_clips.py)."""
    d = tmp_path_factory.mktemp("examples")
    ex = d / "examples"
    shutil.copytree(ROOT / "examples", ex, ignore=shutil.ignore_patterns("clips", "__pycache__"))
    r = subprocess.run([sys.executable, str(ex / "make_clips.py"), "--frames", str(FRAMES), "--size", "320", "240"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (ex / "clips" / "cam1.mp4").is_file() and (ex / "clips" / "cam2.mp4").is_file()
    return d


def test_every_example_is_listed():
    assert {p.name for p in EXAMPLES} == set(OUTPUTS)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_runs(workdir, name, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("VIDFLOW_ALLOW_CODE", raising=False)
    yaml_path = f"examples/{name}"
    extra = ["--allow-code", "filters"] if name == "user_code.yaml" else []
    assert main(["check", yaml_path, *extra]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["run", yaml_path, "-q", "--set", "device=cpu", *extra]) == 0, capsys.readouterr().err
    outputs, frames = OUTPUTS[name]
    for out in outputs:
        assert (workdir / out).stat().st_size > 0
    lines = [json.loads(x) for x in (workdir / outputs[0]).read_text().splitlines()]
    counts: dict = {}
    for rec in lines:
        counts[rec["source_id"]] = counts.get(rec["source_id"], 0) + 1
    assert counts == frames
    assert sum(len(r["objects"]) for r in lines) > 0   # the demo detector finds the generated shapes
    if name == "user_code.yaml":
        assert all((o["bbox"][2] - o["bbox"][0]) * (o["bbox"][3] - o["bbox"][1]) >= 400 for r in lines for o in r["objects"])
    if name.endswith("video.yaml"):
        import av

        with av.open(str(workdir / outputs[1])) as c:
            assert sum(1 for _ in c.decode(video=0)) == FRAMES


def test_user_code_example_needs_the_allow_list(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("VIDFLOW_ALLOW_CODE", raising=False)
    assert main(["check", "examples/user_code.yaml"]) == 2
    assert "--allow-code filters" in capsys.readouterr().err


def test_readme_yaml_is_valid(workdir, monkeypatch, capsys):
    """The README's YAML blocks name files that exist (the examples' clips) and pass `vidflow check`."""
    import re

    monkeypatch.chdir(workdir)
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    pipelines = [b for b in blocks if "sources:" in b]
    assert len(pipelines) >= 2
    for i, text in enumerate(pipelines):
        p = workdir / "examples" / f"readme_{i}.yaml"
        p.write_text(text)
        assert main(["check", str(p), "--allow-code", "filters", "--set", "device=cpu"]) == 0, capsys.readouterr().err
