"""The pipeline workload of ``vidflow bench`` (E): N looping FileSources -> Muxer -> Detector ->
Tracker -> JsonlSink, watched only through the pipeline's public API: an observer (latencies,
the per-part breakdown with each thread's stream synchronised) and ``snapshot()`` (decode processes,
offered and dropped frames)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from .workloads import Work, clip_fps

__all__ = ["PipeWork"]

#: observer names -> the breakdown's parts
_PARTS = {"muxer.collect": "collect", "muxer.assemble": "assemble", "detect.launch": "detect",
          "detect.finish": "detect-finish"}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class _Watch:
    """The bench's observer: frame latencies always; per-part times while ``sync`` is on."""

    def __init__(self, lat: Any) -> None:
        self.lat, self.sync, self.batches = lat, False, 0
        self.parts: dict[str, float] = {}

    def on_stage(self, stage: str, batch_size: int, seconds: float) -> None:
        if self.sync:
            part = _PARTS.get(stage, stage)
            self.parts[part] = self.parts.get(part, 0.0) + seconds

    def on_write(self, sink: str, batch_size: int, seconds: float) -> None:
        if self.sync and sink == "jsonl":
            self.parts["sink"] = self.parts.get("sink", 0.0) + seconds

    def on_batch(self, frames: int, wait_s: float, latencies_s: Sequence[float]) -> None:
        self.batches += 1
        self.lat.extend(x * 1e3 for x in latencies_s)


class _CountObjects:
    """A sink counting the objects written (``objects_per_frame``)."""

    name = "count"

    def __init__(self) -> None:
        self.objects = 0

    def write(self, batch: Any) -> None:
        self.objects += len(batch.objects)

    def close(self) -> None:
        pass


class PipeWork(Work):
    def __init__(self, clip: str, n: int, dev: torch.device, *, model: str, batch: int, mux_size: tuple[int, int],
                 track: bool, max_wait_ms: float, queue_size: int, jsonl: str, pace: float | None = None,
                 torch_threads: int | None = None, decode_processes: int = 0) -> None:
        from ..mux import Muxer
        from ..pipeline import Pipeline
        from ..sinks.jsonl import JsonlSink
        from ..sources.file import FileSource
        from ..stages.detect import Detector
        from ..stages.track import Tracker

        super().__init__()
        self.dev, self.pace = dev, pace
        self.watch, self.counter = _Watch(self.lat), _CountObjects()
        stages: list[Any] = [Detector(model, half=dev.type == "cuda")]
        if track:
            stages.append(Tracker())
        sink = JsonlSink(jsonl)
        # paced: each stream replays the clip like a camera at ``pace`` frames/s (FileSource's
        # realtime mode: released when due, stamped then, live drop-oldest queues)
        speed = pace / clip_fps(clip) if pace else False
        sources = [FileSource(clip, loop=True, realtime=speed) for _ in range(n)]
        self.pipe = Pipeline(sources, Muxer(batch_size=batch, max_wait_ms=max_wait_ms, size=mux_size), stages,
                             [sink, self.counter], device=dev, queue_size=queue_size, torch_threads=torch_threads,
                             decode_processes=decode_processes, observers=[self.watch])
        self.extra["decode_processes"] = decode_processes

    def child_cpu(self) -> float:
        return self.pipe.snapshot().decode_cpu_s

    def child_pids(self) -> list[int]:
        return self.pipe.snapshot().decode_pids

    @staticmethod
    def _offered_dropped(s: Any) -> tuple[int, int]:
        # every frame a paced source releases reaches the pipeline as one decoded frame
        return sum(st.decoded for st in s.sources.values()), sum(st.dropped for st in s.sources.values())

    def window(self, wall: float | None = None) -> dict[str, Any]:
        snap = self.pipe.snapshot()     # start-up: from run() to the first batch / to steady state
        if wall is None:
            self._r0, self._d0 = self._offered_dropped(snap)
            self._loop0, self._b0 = dict(snap.loop_s), snap.batches
            return {}
        out: dict[str, Any] = {"first_batch_s": _r(snap.first_batch_s), "steady_s": _r(snap.steady_s),
                               "startup_phases_s": dict(snap.startup_s)}
        nb = max(snap.batches - self._b0, 1)
        # where the loop waited, unsynced, per batch of the window: tail_full >> tail_idle means
        # the tail half (finish, later stages, sinks) is the slower one; the reverse, the main half
        out["waits_ms_per_batch"] = {k: round((v - self._loop0.get(k, 0.0)) * 1e3 / nb, 2)
                                     for k, v in snap.loop_s.items()}
        if not self.pace:
            return out
        released, dropped = self._offered_dropped(snap)
        return {**out, "offered_fps": round((released - self._r0) / wall, 1),
                "pace_fps_per_stream": round(self.pace, 2), "dropped_fps": round((dropped - self._d0) / wall, 1)}

    def start(self) -> None:
        # the process-wide settings a pipeline run wants (torch threads, the collector's freeze),
        # as `vidflow run` enters them
        self._settings = self.pipe.process_settings()
        self._settings.__enter__()
        self.it: Any = iter(self.pipe)

    def pump(self) -> None:
        try:
            b = next(self.it)
        except StopIteration:
            raise RuntimeError("the pipeline ended early (looping sources should not end)") from None
        self.counts[0] += len(b.frames)

    def stop(self) -> None:
        try:
            self.it.close()
        finally:
            self._settings.__exit__(None, None, None)

    def breakdown(self, seconds: float) -> dict[str, Any]:
        """Time per batch in each part of the loop, each thread's CUDA stream synchronised around each part."""
        w = self.watch
        w.parts, b0, f0, o0 = {}, w.batches, self.count(), self.counter.objects
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        w.sync, t0 = True, time.perf_counter()
        while time.perf_counter() - t0 < seconds or w.batches == b0:
            self.pump()
        wall, w.sync = time.perf_counter() - t0, False
        nb = max(w.batches - b0, 1)
        parts = {k: round(v * 1e3 / nb, 2) for k, v in w.parts.items()}
        parts["other"] = round(wall * 1e3 / nb - sum(parts.values()), 2)
        return {"breakdown_ms_per_batch": parts, "breakdown_fps": round((self.count() - f0) / wall, 1),
                "frames_per_batch": round((self.count() - f0) / nb, 2),
                "objects_per_frame": round((self.counter.objects - o0) / max(self.count() - f0, 1), 2)}
