"""Decode processes (``Pipeline(decode_processes=K)``, ``vidflow.sources.pool``) on the CPU:
frames cross the process boundary through shared memory; every frame arrives, intact, in order;
failures stay with their source; a dead worker fails only its sources; nothing is left behind."""

from __future__ import annotations

import glob
import os
import threading
import time

import pytest
import torch

from vidflow import Pipeline
from vidflow.errors import DecodeError
from vidflow.mux import Muxer
from vidflow.sources.file import FileSource
from vidflow.testing import FakeSource, MemorySink, frame_value

pytestmark = pytest.mark.timeout(180)


def _shm_files() -> set[str]:
    return set(glob.glob("/dev/shm/vidflow-*"))


def _frames_by_source(sink: MemorySink) -> dict:
    seen: dict = {}
    for b in sink.batches:
        for i, f in enumerate(b.frames):
            seen.setdefault(f.source_id, []).append((f.frame_num, b.images[i]))
    return seen


def test_pooled_fake_sources_deliver_every_frame_intact_and_in_order():
    before = _shm_files()
    sink = MemorySink(keep_images=True)
    srcs = [FakeSource(37), FakeSource(25, width=32, height=24), FakeSource(41)]
    p = Pipeline(srcs, Muxer(batch_size=4, size=(64, 48)), [], [sink], device="cpu", decode_processes=2)
    summary = p.run()
    seen = _frames_by_source(sink)
    for sid, n in ((0, 37), (1, 25), (2, 41)):
        nums = [k for k, _ in seen[sid]]
        assert nums == list(range(n)), sid
        for k, img in seen[sid]:
            assert int(img.float().mean().round()) == frame_value(sid, k), (sid, k)
        st = summary.sources[sid]
        assert (st.state, st.frames, st.decoded, st.error) == ("ended", n, n, None)
    assert _shm_files() <= before                       # every ring file unlinked


def test_pooled_file_source_equals_threaded(tmp_path):
    from vidflow.scenes import make_clip

    clip = make_clip(tmp_path / "c.mp4", width=160, height=96, frames=24, seed=4).path
    outs = []
    for procs in (0, 1):
        sink = MemorySink(keep_images=True)
        src = FileSource(clip)
        Pipeline([src], Muxer(batch_size=5), [], [sink], device="cpu", decode_processes=procs).run()
        outs.append(torch.cat([b.images for b in sink.batches]))
        if procs:
            assert src.backend == "ffmpeg"                # copied back from the decode process
    assert outs[0].shape[0] == 24
    assert torch.equal(outs[0], outs[1])


def test_a_failing_pooled_source_fails_alone():
    sink = MemorySink()
    p = Pipeline([FakeSource(30), FakeSource(30, fail_after=12)], Muxer(batch_size=4), [], [sink],
                 device="cpu", decode_processes=1, strict=True)
    with pytest.raises(DecodeError, match=r"source 1 \(fake://source\): fake failure after 12"):
        p.run()
    st = p.summary.sources
    assert (st[0].state, st[0].frames) == ("ended", 30)
    assert (st[1].state, st[1].frames, st[1].errors) == ("failed", 12, 1)


def test_a_killed_decode_process_fails_its_sources_and_the_others_go_on():
    slow = [FakeSource(None, delay=0.01, uri=f"fake://a{i}") for i in range(2)]
    p = Pipeline([slow[0], slow[1], FakeSource(None, delay=0.01, uri="fake://b")], Muxer(batch_size=2),
                 [], [MemorySink()], device="cpu", decode_processes=2, strict=False)
    killed = False
    t0 = time.monotonic()
    for _ in p:
        pool = p._pool
        if not killed and p.summary.sources[0].frames > 5:
            victim = pool._where[0]                      # noqa: SLF001 - the process carrying source 0
            victim.proc.kill()
            killed = True
            t_kill = time.monotonic()
            others = [sid for sid, w in pool._where.items() if w is not victim]   # noqa: SLF001
            assert others
        if killed and time.monotonic() - t_kill > 1.5:
            break
        assert time.monotonic() - t0 < 60
    st = p.summary.sources
    assert st[0].state == "failed" and "decode process" in str(st[0].error) and "exited" in str(st[0].error)
    assert "fake://a0" in str(st[0].error)
    for sid in others:
        assert st[sid].state == "running" and st[sid].error is None
    frames_then = {sid: st[sid].frames for sid in others}
    p.stop()
    assert all(frames_then[sid] > 0 for sid in others)


def test_remove_a_pooled_source_while_running():
    p = Pipeline([FakeSource(None, delay=0.005), FakeSource(60)], Muxer(batch_size=2), [], [MemorySink()],
                 device="cpu", decode_processes=1)
    removed = False
    for _ in p:
        if not removed and p.summary.sources[0].frames >= 4:
            p.remove_source(0)
            removed = True
    st = p.summary.sources
    assert removed and st[0].state == "removed" and st[1].frames == 60 and st[1].state == "ended"


def test_live_pooled_source_drops_oldest_and_gives_its_slots_back():
    class Slow:
        def __call__(self, batch):
            time.sleep(0.02)
            return batch

    src = FakeSource(150, live=True)
    p = Pipeline([src], Muxer(batch_size=1), [Slow()], [MemorySink()], device="cpu", queue_size=2,
                 decode_processes=1)
    done = threading.Event()
    out = {}

    def run():
        out["s"] = p.run()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "a live pooled source stalled (slots not given back?)"
    st = out["s"].sources[0]
    assert st.dropped > 0 and st.frames + st.dropped == st.decoded == 150


def test_unpicklable_pooled_source_fails_by_name():
    class Bad(FakeSource):          # a local class cannot be pickled by reference
        pass

    p = Pipeline([Bad(5, uri="rtsp://u:secret@cam/1"), FakeSource(5)], Muxer(batch_size=2), [], [MemorySink()],
                 device="cpu", decode_processes=1, strict=False)
    s = p.run()
    assert s.sources[0].state == "failed" and "decode process" in str(s.sources[0].error)
    assert "secret" not in str(s.sources[0].error) and "cam/1" in str(s.sources[0].error)
    assert s.sources[1].frames == 5


def test_decode_processes_argument_checked():
    with pytest.raises(ValueError, match="decode_processes"):
        Pipeline([], device="cpu", decode_processes=-1)


def test_worker_processes_end_with_the_pipeline():
    p = Pipeline([FakeSource(10)], Muxer(batch_size=4), [], [MemorySink()], device="cpu", decode_processes=2)
    it = iter(p)
    next(it)
    pids = p._pool.pids()           # noqa: SLF001
    assert len(pids) == 2
    for _ in it:
        pass
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


class SizeChangingSource(FakeSource):
    """A FakeSource whose frames change size after ``switch`` frames (a new ring is sent)."""

    def __init__(self, frames: int, switch: int, **kw) -> None:
        super().__init__(frames, **kw)
        self.switch = switch

    def frames(self, *, device, source_id):
        for f in super().frames(device=device, source_id=source_id):
            if f.info.frame_num >= self.switch:
                data = f.data.repeat(1, 2, 2)                     # twice the size, same grey level
                info = f.info.replace(width=data.shape[2], height=data.shape[1])
                f = type(f)(info, data, "rgb")
            yield f


def test_a_size_change_sends_a_new_ring_and_loses_nothing():
    sink = MemorySink(keep_images=True)
    p = Pipeline([SizeChangingSource(20, 7)], Muxer(batch_size=3, size=(64, 48)), [], [sink], device="cpu",
                 decode_processes=1)
    p.run()
    seen = _frames_by_source(sink)[0]
    assert [k for k, _ in seen] == list(range(20))
    for k, img in seen:
        assert int(img.float().mean().round()) == frame_value(0, k), k
    widths = [f.width for b in sink.batches for f in b.frames]
    assert widths[:7] == [64] * 7 and set(widths[7:]) == {128}


def test_sources_added_to_a_running_pooled_pipeline():
    p = Pipeline([FakeSource(None, delay=0.002)], Muxer(batch_size=2), [], [MemorySink()], device="cpu",
                 decode_processes=2)
    added = None
    for _ in p:
        if added is None and p.summary.sources[0].frames >= 4:
            added = p.add_source(FakeSource(15, uri="fake://late"))
            assert added in p._pooled                              # noqa: SLF001 - in a decode process
        if added is not None and p.summary.sources[added].frames == 15:
            p.stop()
    st = p.summary.sources[added]
    assert st.frames == 15 and st.error is None


def test_a_ring_is_mapped_even_when_the_worker_has_moved_on(monkeypatch):
    """The pipeline maps a ring late (slow receiver) after the worker already made the next one:
    the first ring's file must still be there (once it was unlinked early: the receiver failed and
    the run hung)."""
    import vidflow.sources.pool as pool

    real = pool._open_ring

    def slow(payload):
        time.sleep(0.5)
        return real(payload)

    monkeypatch.setattr(pool, "_open_ring", slow)
    sink = MemorySink(keep_images=True)
    p = Pipeline([SizeChangingSource(6, 1)], Muxer(batch_size=2, size=(64, 48)), [], [sink], device="cpu",
                 decode_processes=1)
    s = p.run()
    assert s.sources[0].frames == 6 and s.sources[0].error is None
    assert [k for k, _ in _frames_by_source(sink)[0]] == list(range(6))
