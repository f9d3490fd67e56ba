"""vidflow.fleet without Ray: cameras.yaml, resume/ack parts, the worker in-process, results, bookkeeping."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from tests.unit._brokers import wait_until
from vidflow.batch import Batch, FrameInfo
from vidflow.errors import ConfigError
from vidflow.fleet._book import CameraState, format_status
from vidflow.fleet._parts import AckSink, Resume
from vidflow.fleet.results import read_records, worker_files
from vidflow.fleet.spec import CameraSpec, load_fleet, parse_cameras, parse_fleet
from vidflow.fleet.worker import PipelineWorker, worker_sink_path
from vidflow.sinks.base import ThreadedSink
from vidflow.testing import FakeSource, frame_value

# -- cameras.yaml ------------------------------------------------------------------------------


def test_load_fleet_resolves_paths_and_reads_settings(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    (tmp_path / "pipe.yaml").write_text("muxer: {batch_size: 2}\nstages: [{detect: {model: demo}}]\n")
    (tmp_path / "cameras.yaml").write_text(
        "fleet: {name: site1, workers: 2, num_gpus: 0.5, capacity: 32, move_back: true}\n"
        "pipeline: pipe.yaml\n"
        "cameras:\n"
        "  - {id: lobby, file: clips/a.mp4}\n"
        "  - {id: 7, file: {path: clips/a.mp4, loop: true}, cost: 2}\n"
        "  - {id: gate, rtsp: {url: 'rtsp://cam/s1'}}\n")
    spec = load_fleet(tmp_path / "cameras.yaml")
    s = spec.settings
    assert (s.name, s.workers, s.num_gpus, s.capacity, s.move_back) == ("site1", 2, 0.5, 32, True)
    assert [c.id for c in spec.cameras] == ["lobby", "7", "gate"]
    assert spec.cameras[0].entry == {"file": str(tmp_path / "clips" / "a.mp4")}
    assert spec.cameras[1].entry == {"file": {"path": str(tmp_path / "clips" / "a.mp4"), "loop": True}}
    assert spec.cameras[1].cost == 2.0 and spec.cameras[2].kind == "rtsp"
    assert spec.template["muxer"] == {"batch_size": 2} and spec.template["_base"] == str(tmp_path)


@pytest.mark.parametrize("items, path, message", [
    ([{"file": "a.mp4"}], "cameras[0]", "stable 'id'"),
    ([{"id": "a", "file": "a.mp4"}, {"id": "a", "file": "b.mp4"}], "cameras[1].id", "used twice"),
    ([{"id": "a", "nope": "x"}], "cameras[0].nope", "unknown source kind"),
    ([{"id": "a", "file": "x", "rtsp": "y"}], "cameras[0]", "one 'kind: arguments'"),
    ([{"id": "a", "file": "x", "cost": 0}], "cameras[0].cost", "> 0"),
    ("file: a.mp4", "cameras", "a list"),
])
def test_bad_cameras_name_their_path(items, path, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_cameras(items)
    assert e.value.path == path


def test_bad_fleet_settings_name_their_path():
    with pytest.raises(ConfigError) as e:
        parse_fleet({"workerz": 2})
    assert e.value.path == "fleet.workerz"
    with pytest.raises(ConfigError) as e:
        parse_fleet({"move_back": 1})
    assert e.value.path == "fleet.move_back"
    with pytest.raises(ConfigError, match="num_gpus"):
        parse_fleet({"num_gpus": -1})
    assert parse_fleet({"num_gpus": 0.25}).num_gpus == 0.25


def test_a_template_with_sources_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("pipeline: {sources: [{file: a.mp4}]}\ncameras: []\n")
    with pytest.raises(ConfigError) as e:
        load_fleet(tmp_path / "c.yaml")
    assert e.value.path == "pipeline.sources"


def test_worker_sink_paths():
    assert worker_sink_path("out/frames.jsonl", "w0") == "out/frames.w0.jsonl"
    assert worker_sink_path("out/{worker}/frames.jsonl", "w3") == "out/w3/frames.jsonl"


# -- resume and acknowledgements -----------------------------------------------------------------

def _frames(src, sid="cam"):
    return [f.info.frame_num for f in src.frames(device=torch.device("cpu"), source_id=sid)]


def test_resume_skips_acknowledged_frames_and_offsets_live_numbers():
    assert _frames(Resume(FakeSource(10), start=6)) == [6, 7, 8, 9]
    assert _frames(Resume(FakeSource(3, live=True), offset=100)) == [100, 101, 102]
    src = Resume(FakeSource(10), start=4)
    got = list(src.frames(device=torch.device("cpu"), source_id=0))
    assert got[0].data[0, 0, 0].item() == frame_value(0, 4) and src.skipped == 4   # the frame itself, not a copy
    assert Resume(FakeSource(1, live=True)).live and Resume(FakeSource(1)).poolable
    with pytest.raises(ValueError):
        Resume(FakeSource(1), start=-1)


def _batch(*frames: tuple[str, int]) -> Batch:
    infos = tuple(FrameInfo(sid, fn, fn / 30, ntp_ns=1_000 + fn, width=8, height=8) for sid, fn in frames)
    return Batch(images=torch.zeros(len(infos), 3, 8, 8, dtype=torch.uint8), frames=infos)


class _GatedSink(ThreadedSink):
    """A threaded sink whose worker thread writes only when the gate is open."""

    def __init__(self) -> None:
        super().__init__(name="gated", queue_size=8)
        self.gate = threading.Event()
        self.seen: list[int] = []

    def _process(self, batch: Batch) -> None:
        self.gate.wait()
        self.seen += [f.frame_num for f in batch.frames]


def test_ack_waits_for_threaded_sinks_to_finish():
    sink = _GatedSink()
    ack = AckSink([sink])
    for b in (_batch(("a", 0), ("b", 0)), _batch(("a", 1), ("a", 2))):
        sink.write(b)
        ack.write(b)
    assert ack.acked() == {}                        # queued in the sink, not written yet
    sink.gate.set()
    wait_until(lambda: len(ack.acked()) == 2, what="acks after the sink wrote")
    assert ack.acked() == {"a": (2, 1_002), "b": (0, 1_000)}
    ack.forget("a")
    assert "a" not in ack.acked()
    sink.close()


def test_forget_drops_pending_acknowledgements_too():
    sink = _GatedSink()
    ack = AckSink([sink])
    b = _batch(("a", 5))
    sink.write(b)
    ack.write(b)
    ack.forget("a")                                 # the camera starts again before its frame was written
    sink.gate.set()
    wait_until(lambda: sink.stats()["written"] == 1, what="written")
    assert ack.acked() == {}
    sink.close()


def test_ack_of_synchronous_sinks_and_kept_records():
    ack = AckSink([object()], keep_records=3)
    ack.write(_batch(("a", 0), ("a", 1)))
    ack.write(_batch(("a", 2), ("a", 3)))
    assert ack.acked() == {"a": (3, 1_003)}
    recs = ack.take_records()
    assert [r["frame_num"] for r in recs] == [1, 2, 3] and ack.records_dropped == 1
    assert ack.take_records() == []


# -- the worker, in-process ------------------------------------------------------------------------

def _template(tmp_path) -> dict:
    return {"device": "cpu", "muxer": {"batch_size": 4, "max_wait_ms": 10},
            "sinks": [{"jsonl": str(tmp_path / "out" / "frames.jsonl")}], "_base": str(tmp_path)}


def _cams_state(w, state):
    rows = w.status()["cameras"]
    return rows if rows and all(r["state"] == state for r in rows.values()) else None


def test_worker_runs_adds_removes_and_acknowledges(tmp_path):
    w = PipelineWorker(_template(tmp_path), "w0", keep_records=100)
    try:
        assert w.status()["state"] == "running" and w.status()["cameras"] == {}
        wait_until(lambda: "sources_started" in w.status()["startup"], what="the worker's pipeline started")
        assert w.add("a", {"synthetic": {"width": 64, "height": 48, "frames": 12}})["ok"]
        assert w.add("b", {"synthetic": {"width": 64, "height": 48, "frames": 12}}, start=5)["ok"]
        rows = wait_until(lambda: _cams_state(w, "ended"), what="both ended")
        wait_until(lambda: all(r["acked"] == 11 for r in w.status()["cameras"].values()), what="both acknowledged")
        rows = w.status()["cameras"]
        assert rows["a"]["frames"] == 12 and rows["b"]["frames"] == 7 and rows["b"]["acked"] == 11
        assert rows["b"]["decoded"] == 7 and rows["b"]["start"] == 5
        recs = w.records()
        assert sorted(r["frame_num"] for r in recs if r["source_id"] == "b") == list(range(5, 12))
        bad = w.add("c", {"file": str(tmp_path / "missing.mp4")})
        assert not bad["ok"] and "missing.mp4" in bad["error"]
        assert w.status()["cameras"]["c"]["state"] == "error"
        assert w.remove("a") == {"ok": True, "acked": 11}
        assert "a" not in w.status()["cameras"]
    finally:
        final = w.stop()
    assert final["state"] == "stopped"
    lines = [json.loads(x) for x in (tmp_path / "out" / "frames.w0.jsonl").read_text().splitlines()]
    assert sorted((r["source_id"], r["frame_num"]) for r in lines) == sorted(
        [("a", i) for i in range(12)] + [("b", i) for i in range(5, 12)])


def test_a_live_camera_is_removed_while_running(tmp_path):
    w = PipelineWorker(_template(tmp_path), "w1")
    try:
        assert w.add("live", {"synthetic": {"width": 64, "height": 48, "frames": None, "fps": 200, "live": True}},
                     offset=1000)["ok"]
        wait_until(lambda: w.status()["cameras"]["live"]["acked"] >= 1005, what="live frames written")
        assert w.status()["cameras"]["live"]["live"] is True
        assert w.remove("live")["acked"] >= 1005
    finally:
        w.stop()


def test_a_restarted_worker_appends_after_a_cut_line(tmp_path, monkeypatch):
    out = tmp_path / "out" / "frames.w0.jsonl"
    out.parent.mkdir()
    out.write_bytes(b'{"source_id":"a","frame_num":0}\n{"source_id":"a","fra')    # killed mid-line
    monkeypatch.setattr("vidflow.fleet.worker._restarted", lambda: True)
    w = PipelineWorker(_template(tmp_path), "w0")
    try:
        w.add("a", {"synthetic": {"width": 64, "height": 48, "frames": 3}}, start=1)
        wait_until(lambda: w.status()["cameras"]["a"]["acked"] == 2, what="written")
    finally:
        w.stop()
    recs = read_records([str(out)])
    assert recs.frames("a") == [0, 1, 2] and recs.damaged_lines == 1 and recs.duplicates == 0


# -- results and bookkeeping ---------------------------------------------------------------------------

def test_read_records_de_duplicates_across_worker_files(tmp_path):
    for wid, frames in (("w0", [0, 1, 2, 3]), ("w1", [2, 3, 4])):
        (tmp_path / f"f.{wid}.jsonl").write_text("".join(json.dumps({"source_id": "a", "frame_num": i}) + "\n"
                                                         for i in frames) + '{"event": "end"}\n')
    assert worker_files(str(tmp_path / "f.jsonl")) == [str(tmp_path / "f.w0.jsonl"), str(tmp_path / "f.w1.jsonl")]
    recs = read_records(str(tmp_path / "f.jsonl"))
    assert recs.frames("a") == [0, 1, 2, 3, 4] and recs.duplicates == 2 and len(recs) == 5
    assert recs.missing("a", 7) == [5, 6]


def test_resume_point_and_gap_of_a_moved_camera():
    cam = CameraState(CameraSpec("a", {"file": "x.mp4"}))
    assert cam.resume_point(0.0) == (0, 0)
    cam.started("w0", "inc", 100.0)
    cam.seen({"frames": 30, "acked": 24, "acked_ns": 0, "state": "running"}, 101.0, 0.5)
    cam.lose("worker died", 102.0)
    assert cam.state == "pending" and cam.worker is None
    assert cam.resume_point(103.0) == (25, 0)
    cam.started("w1", "inc2", 103.0)
    cam.seen({"frames": 4, "acked": 26, "state": "running"}, 104.5, 0.5)
    (move,) = cam.moves
    assert move["from"] == "w0" and move["to"] == "w1" and move["resume_s"] == 2.5 and move["gap_s"] == 3.5

    live = CameraState(CameraSpec("b", {"rtsp": "rtsp://x"}), live=True, fps=10.0, acked=99, acked_ns=int(50e9))
    assert live.resume_point(52.0) == (0, 120)      # 2 s at 10 fps skipped in the numbering


def test_repeated_failures_back_off_then_fail():
    cam = CameraState(CameraSpec("a", {"file": "x.mp4"}))
    cam.fail("boom", 10.0, max_failures=3, backoff_s=1.0, max_backoff_s=30.0)
    assert cam.state == "backoff" and cam.retry_at == 11.0
    cam.fail("boom", 11.0, max_failures=3, backoff_s=1.0, max_backoff_s=30.0)
    assert cam.retry_at == 13.0                      # doubled
    cam.fail("boom again", 13.0, max_failures=3, backoff_s=1.0, max_backoff_s=30.0)
    assert cam.state == "failed" and cam.terminal and cam.error == "boom again"


def test_format_status_names_every_worker_and_camera():
    st = {"name": "f", "fps": 12.0, "unplaced": [],
          "workers": [{"id": "w0", "state": "running", "pid": 1, "host": "h", "gpus": ["0"], "load": 1.0,
                       "capacity": 4.0, "restarts": 0, "error": None}],
          "cameras": [CameraState(CameraSpec("cam", {"file": "x"}), worker="w0", state="running").row()]}
    text = format_status(st)
    assert "worker w0" in text and "gpus 0" in text and "cam" in text and "running" in text


def test_worker_http_ports_do_not_collide():
    from vidflow.fleet.worker import worker_http

    assert [worker_http(9100, i) for i in range(3)] == [9100, 9101, 9102]
    assert worker_http("0.0.0.0:9100", 2) == "0.0.0.0:9102" and worker_http("127.0.0.1:0", 3) == "127.0.0.1:0"
    assert worker_http(0, 1) == 0 and worker_http(None, 1) is None


def test_adding_an_id_still_held_returns_busy_at_once(tmp_path):
    w = PipelineWorker(_template(tmp_path), "w2")
    try:
        live = {"synthetic": {"width": 64, "height": 48, "frames": None, "fps": 100, "live": True}}
        assert w.add("x", live)["ok"]
        res = w.add("x", live)                 # the pipeline still holds "x": not waited for
        assert res["ok"] is False and res["busy"] is True and "already in use" in res["error"]
        assert w.status()["cameras"] == {}     # (the worker's record went with the refused add)
    finally:
        w.stop()


# -- the reconciler's rounds, with a stand-in for Ray -------------------------------------------

class _Done:
    """A finished Ray call."""
    def __init__(self, value):
        self.value = value


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *a, **kw):
        return _Done(self.fn(*a, **kw))


class _FakeRay:
    @staticmethod
    def wait(refs, timeout=0):
        return list(refs), []

    @staticmethod
    def get(ref):
        return ref.value


class _Handle:
    """A worker that answers its adds from ``answers`` (the last one repeats)."""
    def __init__(self, answers):
        self.answers, self.adds = list(answers), 0
        self.add = _Method(self._add)
        self.remove = _Method(lambda cid: {"ok": True, "acked": -1})

    def _add(self, cid, entry, start=0, offset=0):
        self.adds += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _rec(handle, **settings):
    from vidflow.fleet._book import WorkerState
    from vidflow.fleet._reconcile import Reconciler
    from vidflow.fleet.spec import FleetSettings

    rec = Reconciler(FleetSettings(poll_s=0.5, **settings))
    rec.workers["w0"] = WorkerState("w0", handle, 8, state="running", incarnation="i0")
    rec.cams["a"] = CameraState(CameraSpec("a", {"file": "a.mp4"}))
    rec.order = ["a"]
    return rec


def test_a_camera_whose_previous_run_is_still_released_is_added_again_without_a_failure():
    busy = {"ok": False, "busy": True, "error": "add_source: source id 'a' is already in use", "incarnation": "i0"}
    h = _Handle([busy, busy, {"ok": True, "incarnation": "i0"}])
    rec = _rec(h)
    for now in (0.0, 0.1, 0.2, 0.3, 0.8, 0.9, 1.5, 1.6):
        rec.tick(_FakeRay, now)
    cam = rec.cams["a"]
    assert h.adds == 3 and cam.failures == 0 and cam.error is None
    assert cam.state == "starting" and cam.worker == "w0" and cam.incarnation == "i0"


def test_a_previous_run_never_released_counts_as_a_failure():
    busy = {"ok": False, "busy": True, "error": "add_source: source id 'a' is already in use", "incarnation": "i0"}
    h = _Handle([busy])
    rec = _rec(h, release_timeout_s=2.0, backoff_s=10.0)
    states = []
    for i in range(40):
        rec.tick(_FakeRay, i * 0.1)
        states.append(rec.cams["a"].state)
    cam = rec.cams["a"]
    assert "releasing" in states and cam.failures == 1 and cam.state == "backoff"
    assert "not released in 2 s" in cam.error and "already in use" in cam.error
    assert 4 <= h.adds <= 6                    # asked again every poll_s, no tighter
