"""Decode processes (``Pipeline(decode_processes=K)``, ``vidflow.sources.pool``) on the CPU:
frames cross the process boundary through shared memory; every frame arrives, intact, in order;
failures stay with their source; a dead worker fails only its sources; counters come back as
``SourceCounters``; nothing is left behind. Public APIs only; no sleeps, no time windows: waits
are ``wait_until(condition, timeout)``."""

from __future__ import annotations

import glob
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
import torch

from vidflow import Pipeline
from vidflow.errors import DecodeError
from vidflow.mux import Muxer
from vidflow.sources.file import FileSource
from vidflow.sources.pool import DecodePool, PooledSource, poolable
from vidflow.stats import SourceCounters
from vidflow.testing import FakeSource, MemorySink, frame_value

pytestmark = pytest.mark.timeout(180)


def wait_until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail after ``timeout`` s (a bound against hangs, not a timing)."""
    end = time.monotonic() + timeout
    ev = threading.Event()
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        ev.wait(0.01)


class Taker:
    """``deliver``/``finish`` callbacks for a DecodePool that the test controls: frames are
    checked and released at once (``refuse(n)``: refuse frame n instead), ends recorded."""

    def __init__(self, refuse: Callable[[int], bool] = lambda n: False) -> None:
        self.got: dict = {}
        self.refused: dict = {}
        self.ended: dict = {}
        self.refuse = refuse
        self.lock = threading.Lock()

    def deliver(self, sid):
        def take(frame) -> bool:
            with self.lock:
                n = frame.info.frame_num
                if self.refuse(n):
                    self.refused.setdefault(sid, []).append(n)
                    return False
                self.got.setdefault(sid, []).append((n, int(frame.data.float().mean().round())))
            frame.release()
            return True
        return take

    def finish(self, sid):
        def end(err) -> None:
            self.ended[sid] = err
        return end

    def count(self, sid) -> int:
        with self.lock:
            return len(self.got.get(sid, ()))


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
    pool, t = DecodePool(2, "cpu", slots=4), Taker()
    try:
        for sid, uri in ((0, "fake://a0"), (1, "fake://a1"), (2, "fake://b")):
            pool.open(sid, FakeSource(None, delay=0.002, uri=uri), t.deliver(sid), t.finish(sid))
        wait_until(lambda: all(t.count(s) > 5 for s in range(3)), what="frames from every source")
        victim = pool.where(0)
        others = [s for s in range(3) if pool.where(s) != victim]
        assert victim is not None and others and pool.alive() == [True, True]
        os.kill(pool.pids()[victim], signal.SIGKILL)
        wait_until(lambda: 0 in t.ended, what="source 0 failed")
        err = t.ended[0]
        assert isinstance(err, DecodeError) and "decode process" in str(err) and "exited" in str(err)
        assert "fake://a0" in str(err) and err.source_id == 0
        assert pool.where(0) is None and not pool.alive()[victim]
        then = {s: t.count(s) for s in others}
        wait_until(lambda: all(t.count(s) > then[s] + 5 for s in others), what="the other sources going on")
        assert all(s not in t.ended for s in others)
    finally:
        pool.shutdown()
    assert all(t.ended[s] is None for s in others)       # closed by the shutdown: no error


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
    src = FakeSource(150, live=True)
    holder: dict = {}

    class Hold:
        """Holds the first batch until the source has decoded all it has: its queue (2) overflows."""

        def __init__(self) -> None:
            self.first = True

        def __call__(self, batch):
            if self.first:
                self.first = False
                wait_until(lambda: holder["p"].summary.sources[0].decoded == 150, what="all frames decoded")
            return batch

    p = Pipeline([src], Muxer(batch_size=1), [Hold()], [MemorySink()], device="cpu", queue_size=2,
                 decode_processes=1)
    holder["p"] = p
    st = p.run().sources[0]
    assert st.dropped > 0 and st.frames + st.dropped == st.decoded == 150


def test_refused_frames_give_their_slots_back():
    """deliver() refusing a frame (a full live queue) gives its slot back: with 3 slots and 2 of
    every 3 frames refused, the source still runs to its end, every frame offered once."""
    pool, t = DecodePool(1, "cpu", slots=3), Taker(refuse=lambda n: n % 3 != 0)
    try:
        pool.open(0, FakeSource(150), t.deliver(0), t.finish(0))
        wait_until(lambda: 0 in t.ended, what="the end of the source")
    finally:
        pool.shutdown()
    assert t.ended[0] is None
    assert [n for n, _ in t.got[0]] == list(range(0, 150, 3))
    assert sorted(t.refused[0] + [n for n, _ in t.got[0]]) == list(range(150))
    assert all(v == frame_value(0, n) for n, v in t.got[0])


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


def _gone(pid: int) -> bool:
    if not os.path.exists(f"/proc/{pid}"):
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] == "Z"


def test_worker_processes_end_with_the_pool_and_the_pipeline():
    pool, t = DecodePool(2, "cpu"), Taker()
    pool.open(0, FakeSource(10), t.deliver(0), t.finish(0))
    pids = pool.pids()
    assert len(pids) == 2 and pool.alive() == [True, True]
    wait_until(lambda: 0 in t.ended, what="the end of the source")
    pool.shutdown()
    assert all(_gone(pid) for pid in pids)
    # through a pipeline: its decode processes are children of this process, gone after the run
    before = set(_children())
    Pipeline([FakeSource(10)], Muxer(batch_size=4), [], [MemorySink()], device="cpu", decode_processes=2).run()
    assert all(_gone(pid) for pid in set(_children()) - before)


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for d in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.append(int(d.split("/")[2]))
    return out


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


class ElsewhereSource(FakeSource):
    """A FakeSource that fails unless it decodes in another process than the one that made it."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.made_in = os.getpid()

    def frames(self, *, device, source_id):
        if os.getpid() == self.made_in:
            raise DecodeError("decoded in the pipeline's own process", source_id=source_id, uri=self.uri)
        yield from super().frames(device=device, source_id=source_id)


def test_sources_added_to_a_running_pooled_pipeline():
    p = Pipeline([FakeSource(None, delay=0.002)], Muxer(batch_size=2), [], [MemorySink()], device="cpu",
                 decode_processes=2)
    added = None
    for _ in p:
        if added is None and p.summary.sources[0].frames >= 4:
            added = p.add_source(ElsewhereSource(15, uri="fake://late"))   # fails if run in this process
        if added is not None and p.summary.sources[added].frames == 15:
            p.stop()
    st = p.summary.sources[added]
    assert st.frames == 15 and st.error is None


def test_a_ring_is_mapped_even_when_the_worker_has_moved_on(monkeypatch):
    """The pipeline maps a ring late (slow receiver) after the worker already made the next one:
    the first ring's file must still be there (once it was unlinked early: the receiver failed and
    the run hung). The receiver maps the first ring only once the second one's file exists."""
    import vidflow.sources.pool.client as client

    real = client.open_ring
    before = _shm_files()
    first = []

    def late(payload):
        if not first:
            first.append(payload)
            wait_until(lambda: len(_shm_files() - before) >= 2, what="the second ring's file")
        return real(payload)

    monkeypatch.setattr(client, "open_ring", late)
    sink = MemorySink(keep_images=True)
    p = Pipeline([SizeChangingSource(6, 1)], Muxer(batch_size=2, size=(64, 48)), [], [sink], device="cpu",
                 decode_processes=1)
    s = p.run()
    assert first and s.sources[0].frames == 6 and s.sources[0].error is None
    assert [k for k, _ in _frames_by_source(sink)[0]] == list(range(6))
    assert _shm_files() <= before


class CountingSource(FakeSource):
    """Reports ``SourceCounters`` as wave-2 sources do (3 decode errors, its own decoded count)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.decoded = 0
        self.backend = None

    def frames(self, *, device, source_id):
        self.backend = "fake-decoder"
        for f in super().frames(device=device, source_id=source_id):
            self.decoded += 1
            yield f

    def stats(self) -> SourceCounters:
        return SourceCounters(state="running", decoded=self.decoded, decode_errors=3, last_error="3 bad packets")


class DictSource(FakeSource):
    """An older source whose stats() is a dict (read through _wire's one adapter)."""

    def stats(self) -> dict:
        return {"state": "backoff", "reconnects": 2, "stalls": 1, "decode_errors": 4, "last_error": None}


class BrokenStats(FakeSource):
    def stats(self):
        raise RuntimeError("counters unavailable")


def test_counters_cross_the_boundary_as_source_counters():
    pool, t = DecodePool(1, "cpu"), Taker()
    try:
        srcs = {0: CountingSource(20), 1: DictSource(7), 2: BrokenStats(9)}
        handles = {sid: pool.open(sid, src, t.deliver(sid), t.finish(sid)) for sid, src in srcs.items()}
        assert all(isinstance(h, PooledSource) and poolable(h) for h in handles.values())
        assert handles[0].uri == "fake://source" and handles[0].live is False
        assert handles[0].stats() == SourceCounters()                  # nothing reported yet: starting
        wait_until(lambda: len(t.ended) == 3, what="the end of every source")
    finally:
        pool.shutdown()
    assert all(err is None for err in t.ended.values())
    c = handles[0].stats()
    assert isinstance(c, SourceCounters)
    assert (c.state, c.decoded, c.decode_errors, c.last_error) == ("ended", 20, 3, "3 bad packets")
    assert handles[0].backend == "fake-decoder" and handles[0].state == "ended"
    assert srcs[0].decoded == 20 and srcs[0].backend == "fake-decoder"    # mirrored onto the pipeline's copy
    d = handles[1].stats()
    assert (d.state, d.reconnects, d.stalls, d.decode_errors, d.last_error, d.decoded) == ("ended", 2, 1, 4, "", 7)
    assert t.count(2) == 9 and handles[2].stats() == SourceCounters()   # stats() failing loses no frame
    assert pool.where(0) is None and pool.stats(0) is None                # ended: the pool forgot it
    with pytest.raises(TypeError, match="decode process"):
        handles[0].frames(device=torch.device("cpu"), source_id=0)
