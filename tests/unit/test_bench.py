"""CPU smoke test of ``vidflow bench``: every measurement prints one valid JSON line with every field."""

from __future__ import annotations

import json

import pytest
import torch

from vidflow.bench import FIELDS, main, make_bench_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_bench_clip(str(tmp_path_factory.mktemp("bench") / "clip.mp4"), width=160, height=96, frames=20,
                           bitrate=300_000)


def _run(capsys, argv):
    rc = main(argv)
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.strip()]
    return rc, lines


def test_all_measurements_print_every_field(clip, tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    rc, lines = _run(capsys, ["--device", "cpu", "--streams", "2", "--frames", "10", "--model", "demo",
                              "--clip", clip, "--warmup", "0", "--copy-seconds", "0.1",
                              "--breakdown-seconds", "0.1", "--out", str(out)])
    assert rc == 0
    assert [r["bench"] for r in lines] == ["D", "M", "E", "B", "summary"]
    for r in lines[:4]:
        assert "error" not in r, r
        missing = [k for k in FIELDS if k not in r]
        assert not missing, (r["bench"], missing)
        assert r["streams"] == 2 and r["batch_size"] == 2 and r["device"].startswith("cpu")
        assert r["host_cpu"] and r["host_cores"] >= 1        # the host beside the device, every line
        assert r["frames"] >= 20 and r["fps"] > 0 and r["wall_s"] > 0      # 10 frames x 2 streams at least
        assert r["cpu_cores"] >= 0 and r["latency_p95_ms"] >= r["latency_p50_ms"] >= 0
        assert r["h2d_per_frame"] == 0 and r["image_copies_per_frame"] == 0   # no device on the CPU
    d, m, e, b = lines[:4]
    assert d["decoder"] == "ffmpeg"
    assert m["input"] == [320, 320] and m["fps_per_stream"] is None
    assert e["mux_size"] == [160, 96] and e["objects_per_frame"] >= 0
    assert e["first_batch_s"] > 0 and (e["steady_s"] is None or e["steady_s"] >= e["first_batch_s"])
    assert set(e["breakdown_ms_per_batch"]) >= {"collect", "assemble", "detect", "track", "sink", "other"}
    summary = lines[4]
    assert summary["host_cpu"] == d["host_cpu"] and summary["host_cores"] == d["host_cores"]
    assert summary["E_over_D"] == pytest.approx(e["fps"] / d["fps"], abs=0.001)
    assert out.read_text().splitlines() == [json.dumps(r) for r in lines]


def test_skip_and_variants(clip, capsys):
    threads = torch.get_num_threads()
    rc, lines = _run(capsys, ["--device", "cpu", "--streams", "1", "--frames", "4", "--model", "demo",
                              "--clip", clip, "--warmup", "0", "--copy-seconds", "0", "--breakdown-seconds", "0",
                              "--skip", "D", "M", "B", "--variants", "full", "notrack", "paced",
                              "--torch-threads", "1"])
    assert rc == 0
    assert [r["bench"] for r in lines] == ["E", "E-notrack", "E-paced", "summary"]
    assert "breakdown_ms_per_batch" not in lines[0]
    assert all(r["torch_threads"] == 1 for r in lines[:3])
    paced = lines[2]
    assert paced["pace_fps_per_stream"] == pytest.approx(0.8 * lines[0]["fps"], rel=0.02)
    assert paced["offered_fps"] > 0 and paced["frames"] >= 4
    assert lines[3]["E_over_D"] is None
    assert torch.get_num_threads() == threads          # --torch-threads is undone after the run


def test_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--skip", "X"])
    with pytest.raises(SystemExit):
        main(["--size", "17x9"])
