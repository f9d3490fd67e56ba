"""The workloads ``vidflow bench`` measures (see :mod:`vidflow.bench`): decode only (threads or
decode processes), model only and the naive baseline; the pipeline's is in :mod:`.pipe`."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

import torch

class Work:
    """A running workload: ``count()`` frames done so far, ``pump()`` drives it (or waits),
    ``lat`` latencies in ms, ``errors`` from worker threads."""

    def __init__(self) -> None:
        self.lat: deque = deque(maxlen=500_000)
        self.errors: list[BaseException] = []
        self.stop_event = threading.Event()
        self.counts: list[int] = [0]
        self.extra: dict[str, Any] = {}

    def count(self) -> int:
        return sum(self.counts)

    def child_cpu(self) -> float:
        """CPU seconds used so far by the workload's decode processes (0: none)."""
        return 0.0

    def child_pids(self) -> list[int]:
        """The workload's decode processes (their memory counts in ``rss_peak_mb``)."""
        return []

    def window(self, wall: float | None = None) -> dict[str, Any]:
        """Called at the start (``wall=None``) and end of the timed window; extra fields."""
        return {}

    def start(self) -> None:
        pass

    def breakdown(self, seconds: float) -> dict[str, Any]:
        """Extra fields from a per-part timing window (only the pipeline has parts)."""
        return {}

    def pump(self) -> None:
        if self.errors:
            import traceback
            where = traceback.extract_tb(self.errors[0].__traceback__)[-3:]
            at = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(where))
            raise RuntimeError(f"{type(self).__name__}: a worker failed: {self.errors[0]!r} at {at}") from self.errors[0]
        time.sleep(0.01)

    def stop(self) -> None:
        self.stop_event.set()


class Threads(Work):
    """One worker thread per stream running ``self.worker(k)``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.counts = n, [0] * n

    def start(self) -> None:
        def run(k: int) -> None:
            try:
                self.worker(k)
            except BaseException as e:  # noqa: BLE001 - surfaced by pump()
                if not self.stop_event.is_set():
                    self.errors.append(e)
        self.threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(self.n)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        super().stop()
        for t in self.threads:
            t.join(timeout=10)

    def worker(self, k: int) -> None:
        raise NotImplementedError


class Decode(Threads):
    def __init__(self, clip: str, n: int, dev: torch.device) -> None:
        super().__init__(n)
        self.clip, self.dev = clip, dev

    def worker(self, k: int) -> None:
        from ..sources.file import FileSource

        if self.dev.type == "cuda":
            torch.cuda.set_device(self.dev)
        src = FileSource(self.clip, loop=True)
        it: Any = src.frames(device=self.dev, source_id=k)
        try:
            for f in it:
                self.counts[k] += 1
                self.lat.append((time.time_ns() - f.info.ntp_ns) / 1e6)
                self.extra["decoder"] = src.backend
                if self.stop_event.is_set():
                    break
        finally:
            it.close()
            src.close()


class DecodeProcs(Work):
    """Decode only, in ``procs`` decode processes (``vidflow.sources.pool``): each frame reaches
    this process as a ring slot, is counted and handed back at once."""

    def __init__(self, clip: str, n: int, dev: torch.device, procs: int) -> None:
        super().__init__()
        self.clip, self.n, self.dev, self.procs = clip, n, dev, procs
        self.counts = [0] * n

    def start(self) -> None:
        from ..sources.file import FileSource
        from ..sources.pool import DecodePool

        self.pool = DecodePool(self.procs, self.dev, slots=10)
        for k in range(self.n):
            def deliver(f: Any, k: int = k) -> bool:
                self.counts[k] += 1
                self.lat.append((time.time_ns() - f.info.ntp_ns) / 1e6)
                f.release()
                return True

            def finish(err: Any) -> None:
                if err is not None and not self.stop_event.is_set():
                    self.errors.append(err)
            self.pool.open(k, FileSource(self.clip, loop=True), deliver, finish)
        self.extra["decode_processes"] = self.procs

    def child_cpu(self) -> float:
        return self.pool.cpu_seconds()

    def child_pids(self) -> list[int]:
        return self.pool.pids()

    def stop(self) -> None:
        super().stop()
        self.pool.shutdown()


class Model(Work):
    def __init__(self, engine: Any, size: tuple[int, int], batch: int, dev: torch.device) -> None:
        super().__init__()
        self.engine, self.batch, self.dev = engine, batch, dev
        self.x = torch.rand(batch, 3, size[1], size[0], device=dev).to(getattr(engine, "input_dtype", torch.float32))

    def pump(self) -> None:
        t = time.perf_counter()
        with torch.inference_mode():
            self.engine(self.x)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self.lat.append((time.perf_counter() - t) * 1e3)
        self.counts[0] += self.batch


class Naive(Threads):
    def __init__(self, clip: str, n: int, dev: torch.device, engine: Any, size: tuple[int, int], fmt: str) -> None:
        super().__init__(n)
        self.clip, self.dev, self.engine, self.size, self.fmt = clip, dev, engine, size, fmt

    def worker(self, k: int) -> None:
        import av

        from ..heads.yolo import decode
        from ..ops.geometry import input_to_image, preprocess

        dtype = getattr(self.engine, "input_dtype", torch.float32)
        while not self.stop_event.is_set():
            with av.open(self.clip) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                for fr in c.decode(s):
                    if self.stop_event.is_set():
                        return
                    t = time.time_ns()
                    rgb = fr.to_ndarray(format="rgb24")                             # [H,W,3] on the host
                    x = torch.from_numpy(rgb).to(self.dev).permute(2, 0, 1)[None]   # the full frame -> device
                    with torch.inference_mode():
                        inp, place = preprocess(x, self.size, dtype=dtype)
                        out = self.engine(inp)
                        det = decode(next(iter(out.values())), format=self.fmt, conf=0.25, iou=0.7)  # type: ignore[arg-type]
                        input_to_image(det.bbox, place).cpu()
                    self.counts[k] += 1
                    self.lat.append((time.time_ns() - t) / 1e6)


def clip_fps(clip: str) -> float:
    import av
    with av.open(clip) as c:
        s = c.streams.video[0]
        return float(s.guessed_rate or s.average_rate or 30)
