"""The top-level settings a pipeline takes (YAML or keywords): strict_device, http, stop_timeout,
and the start-up timings of the run summary."""

from __future__ import annotations

import functools
import json
import urllib.request

import pytest
import torch

from vidflow import Muxer, Pipeline
from vidflow.errors import StageError
from vidflow.runtime.startup import StartupMeter
from vidflow.testing import FakeSource, MemorySink, wait_until


def test_yaml_settings_reach_the_pipeline(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("device: cpu\nstop_timeout: 0.5\nstrict_device: true\nhttp: 127.0.0.1:0\n"
                 "sources: [{synthetic: {width: 32, height: 32, frames: 1}}]\n")
    pipe = Pipeline.from_yaml(str(p))
    assert (pipe.stop_timeout, pipe.strict_device, pipe.http) == (0.5, True, "127.0.0.1:0")


def test_strict_device_names_the_stage_and_the_shape(monkeypatch):
    """On a CPU-only machine "meta" tensors stand in for the device (as in test_strict.py)."""
    import vidflow.runtime.steps as steps
    from vidflow.strict import strict_device

    monkeypatch.setattr(steps, "strict_device", functools.partial(strict_device, devices=("meta",)))

    def leaky(batch):
        torch.empty((3, 64, 64), device="meta").to("cpu")       # an image to the host
        return batch

    def fine(batch):
        x = torch.empty((2, 3, 64, 64), device="meta")
        assert (x * 2).sum((2, 3)).shape == (2, 3)               # device work passes
        batch.images.float().clone()                              # host images are not watched
        return batch

    leaky.name = "leaky"
    ok = Pipeline([FakeSource(2)], Muxer(batch_size=2), [fine], device="cpu", strict_device=True).run()
    assert ok.frames == 2
    with pytest.raises(StageError, match=r"stage 'leaky'.*\[3, 64, 64\]") as ei:
        Pipeline([FakeSource(2)], Muxer(batch_size=2), [fine, leaky], device="cpu", strict_device=True).run()
    assert ei.value.stage == "leaky"
    # off (the default): no check, the copy itself runs (and fails as torch fails it for meta)
    with pytest.raises(StageError, match="Cannot copy out of meta"):
        Pipeline([FakeSource(2)], Muxer(batch_size=2), [leaky], device="cpu").run()


def test_http_serves_while_running_and_stops_after():
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    got = {}
    pipe = None

    def look(batch):
        if not got:
            with urllib.request.urlopen(pipe.server.url + "/api/v1/status", timeout=10) as r:
                got.update(json.loads(r.read()), code=r.status)
        return batch

    pipe = Pipeline([FakeSource(6)], Muxer(batch_size=2), [look], [MemorySink()], device="cpu", http="127.0.0.1:0")
    assert pipe.server is None
    pipe.run()
    assert got["code"] == 200 and got["running"] is True
    assert not pipe.server.running


def test_startup_meter_with_a_fake_clock():
    now = [100.0]
    m = StartupMeter(clock=lambda: now[0])
    for t in (2.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5):
        now[0] = 100.0 + t
        m.batch()
    # the 0.5 s gap after the first batch is a stall; steady from the batch at 2.5 s on
    assert m.first_batch_s == 2.0 and m.steady_s == pytest.approx(2.5)
    m2 = StartupMeter(clock=lambda: now[0])
    now[0] += 1
    m2.batch()
    assert m2.first_batch_s == pytest.approx(1.0) and m2.steady_s is None   # not enough batches yet


def test_startup_phases_with_a_fake_clock():
    now = [10.0]
    m = StartupMeter(clock=lambda: now[0])
    now[0] = 11.5
    m.mark("warm_up")
    now[0] = 12.0
    m.mark("first_frame")
    now[0] = 13.0
    m.mark("first_frame")          # only the first mark counts
    m.batch()
    assert m.phases == {"warm_up": 1.5, "first_frame": 2.0, "first_batch": 3.0}


def test_run_summary_reports_start_up():
    s = Pipeline([FakeSource(40)], Muxer(batch_size=2), [], [MemorySink()], device="cpu").run()
    assert s.first_batch_s is not None and 0 < s.first_batch_s <= s.wall_s
    assert s.steady_s is None or s.first_batch_s <= s.steady_s <= s.wall_s
    assert "start-up: first batch" in s.table()
    ph = s.startup_s               # in order, each after the one before, the last the first batch
    assert list(ph) == ["sources_started", "first_frame", "first_batch"]     # warm-up is off on CPU
    assert sorted(ph.values()) == list(ph.values()) and ph["first_batch"] == pytest.approx(s.first_batch_s, abs=1e-3)
    assert "first frame" in s.table() and s.copy().startup_s == ph


def test_every_yaml_setting_is_a_pipeline_argument():
    import inspect

    from vidflow.config import SETTINGS

    params = inspect.signature(Pipeline).parameters
    assert [k for k in SETTINGS if k not in params] == []
    for k, s in SETTINGS.items():                 # the same default in both places
        assert params[k].default == s.default, k


def test_files_start_during_the_warm_up_and_live_sources_after_it():
    seen = {}
    pipe_box = []

    class Warming:
        name = "warming"

        def __call__(self, batch):
            return batch

        def warmup(self, batch_size, device):
            # the file source decodes while the stages warm up; the live one has not started
            snap = lambda: pipe_box[0].snapshot().sources   # noqa: E731
            wait_until(lambda: snap()["file"].decoded >= 2, timeout=10, what="the file decoding during warm-up")
            seen["live_decoded"] = snap()["cam"].decoded
            seen["phases"] = list(pipe_box[0].snapshot().startup_s)     # the phases so far

    pipe = Pipeline({"file": FakeSource(6), "cam": FakeSource(6, live=True)}, Muxer(batch_size=2, max_wait_ms=5),
                    [Warming()], [MemorySink()], device="cpu", warmup=True)
    pipe_box.append(pipe)
    s = pipe.run()
    assert seen == {"live_decoded": 0, "phases": ["files_started"]}
    assert s.sources["file"].frames == 6 and s.sources["cam"].frames == 6
    ph = s.startup_s
    assert list(ph)[:3] == ["files_started", "warm_up", "sources_started"] and sorted(ph.values()) == list(ph.values())
