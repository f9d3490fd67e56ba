"""Found before the first frame, through the command line (issue 21): wrong YAML types name their
path and run nothing, a YAML naming code executes none of it, a file under a folder this user
cannot enter is *permission denied* (not *not found*), an unwritable sink folder and a bad model
are refused, a nearly full disk is warned about."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from vidflow.cli import main
from vidflow.config import build_parts, load_config
from vidflow.errors import ConfigError


def _yaml(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("cmd", ["check", "run"])
@pytest.mark.parametrize("body,path,msg", [
    ("sources: [{file: {path: CLIP, loop: 'false'}}]\n", "sources[0].file.loop", 'expected bool, got "false"'),
    ("sources: [{file: CLIP}]\nmuxer: {batch_size: 4.5}\n", "muxer.batch_size", "expected int, got 4.5"),
    ("sources: [{file: CLIP}]\nstages: [{detect: {model: demo, conf: high}}]\n", "stages[0].detect.conf",
     'got "high"'),
    ("sources: [{file: CLIP}]\nmuxer: {batch_size: eight}\n", "muxer.batch_size", 'expected int, got "eight"'),
])
def test_wrong_types_name_the_yaml_path_and_run_nothing(tmp_path, capsys, cmd, body, path, msg):
    (tmp_path / "a.mp4").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    p = _yaml(tmp_path, "device: cpu\n" + body.replace("CLIP", str(tmp_path / "a.mp4")) + f"sinks: [{{jsonl: {out}}}]\n")
    assert main([cmd, str(p)]) == 2
    err = capsys.readouterr().err
    assert f"config error: {path}: " in err and msg in err and "Traceback" not in err
    assert not out.exists()                          # nothing started, no output created


@pytest.mark.parametrize("section", ["sources", "stages", "sinks"])
def test_a_yaml_naming_code_executes_none_of_it(tmp_path, capsys, monkeypatch, section):
    monkeypatch.delenv("VIDFLOW_ALLOW_CODE", raising=False)
    marker = tmp_path / "ran"
    src = "" if section == "sources" else "sources: [{synthetic: {frames: 1}}]\n"
    p = _yaml(tmp_path, f"device: cpu\n{src}{section}: [{{'os:system': 'touch {marker}'}}]\n")
    for cmd in ("check", "run"):
        assert main([cmd, str(p)]) == 2
        err = capsys.readouterr().err
        assert f"{section}[0].os:system" in err and "--allow-code os" in err
    assert not marker.exists()


@contextlib.contextmanager
def _as_user(uid: int = 65534):
    """Run the block with another effective user (root only), as a service account would."""
    os.setegid(uid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir():
    """A folder other users may enter (pytest's own tmp folders are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="vidflow-perm-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _error(p: Path) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        build_parts(load_config(p))
    return ei.value


def test_permission_denied_is_not_file_not_found(shared_dir):
    from vidflow.sinks.jsonl import JsonlSink  # noqa: F401 - imported before the user changes
    from vidflow.sources.file import FileSource  # noqa: F401
    from vidflow.stages.detect import Detector  # noqa: F401

    locked = shared_dir / "locked"
    locked.mkdir(mode=0o700)
    (locked / "clip.mp4").write_bytes(b"")
    (locked / "model.onnx").write_bytes(b"")
    ro = shared_dir / "ro"
    ro.mkdir(mode=0o555)
    ro.chmod(0o555)
    locked.chmod(0o700)
    synth = "sources: [{synthetic: {frames: 1}}]\n"
    cases = [
        (f"sources: [{{file: {locked}/clip.mp4}}]\n", "sources[0].file.path",
         f"permission denied (the folder {locked} cannot be entered by this user)"),
        (f"sources: [{{file: {shared_dir}/missing.mp4}}]\n", "sources[0].file.path", "file not found"),
        (synth + f"stages: [{{detect: {{model: {locked}/model.onnx}}}}]\n", "stages[0].detect.model",
         f"permission denied (the folder {locked} cannot be entered by this user)"),
        (synth + f"sinks: [{{jsonl: {locked}/out/f.jsonl}}]\n", "sinks[0].jsonl.path",
         f"permission denied (the folder {locked} cannot be entered by this user)"),
        (synth + f"sinks: [{{jsonl: {ro}/f.jsonl}}]\n", "sinks[0].jsonl.path", "is not writable by this user"),
    ]
    files = []
    for i, (text, _, _) in enumerate(cases):
        files.append(shared_dir / f"p{i}.yaml")
        files[-1].write_text(text)
        files[-1].chmod(0o644)
    ctx = _as_user() if os.geteuid() == 0 else contextlib.nullcontext()
    with ctx:
        errors = [(_error(f), path, msg) for f, (_, path, msg) in zip(files, cases)]
    for e, path, msg in errors:
        assert e.path == path and msg in str(e), str(e)


def test_nearly_full_disk_warned_before_start(tmp_path, caplog):
    out = tmp_path / "o.jsonl"
    free = shutil.disk_usage(tmp_path).free
    p = _yaml(tmp_path, f"sources: [{{synthetic: {{frames: 1}}}}]\nsinks: [{{jsonl: {{path: {out}, "
                        f"warn_free_bytes: {free * 2}}}}}]\n")
    from vidflow import _preflight

    with caplog.at_level(logging.WARNING, logger="vidflow"):
        build_parts(load_config(p))
        free_seen = _preflight.warn_low_space(tmp_path, 0)   # threshold 0: never a warning
    msgs = [r for r in caplog.records if "free on the disk of" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].path == str(out) and msgs[0].threshold_bytes == free * 2 and not out.exists()
    assert free_seen is not None and free_seen > 0
