"""``SyntheticSource``: rendered moving-shapes scenes straight to RGB frames (no encoding).

Deterministic per ``seed``; ground truth of frame ``i`` is ``source.scene.boxes(i)`` (see
:mod:`vidflow.scenes`). ``live=True`` paces frames at ``fps`` in wall-clock time (like a camera;
the pipeline then drops rather than blocks); ``live=False`` renders as fast as it is pulled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import torch

from ..batch import FrameInfo
from ..scenes import Scene
from .base import SourceFrame

__all__ = ["SyntheticSource"]


class SyntheticSource:
    """``frames`` frames (``None`` = endless) of a :class:`~vidflow.scenes.Scene` of
    ``width`` x ``height`` at ``fps``; ``pts = i / fps``. Frames are ``format="rgb"``
    ``[3, H, W]`` uint8 on the requested device (rendered on the CPU, then copied)."""

    def __init__(self, width: int = 640, height: int = 480, *, frames: int | None = 300, fps: float = 30.0,
                 seed: int = 0, live: bool = False) -> None:
        if frames is not None and frames < 0:
            raise ValueError(f"SyntheticSource: frames must be >= 0 or None, got {frames}")
        self.scene = Scene(width, height, seed=seed, fps=fps)
        self.width, self.height, self.fps, self.seed = int(width), int(height), float(fps), int(seed)
        self.num_frames = frames
        self.live = bool(live)
        self.uri = f"synthetic://{width}x{height}?seed={seed}"
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"SyntheticSource({self.width}x{self.height}, frames={self.num_frames}, fps={self.fps}, seed={self.seed})"

    def close(self) -> None:
        self._stop.set()

    def frames(self, *, device: torch.device | str = "cpu", source_id: int | str = 0) -> Iterator[SourceFrame]:
        device = torch.device(device)
        t0 = time.monotonic()
        i = 0
        while (self.num_frames is None or i < self.num_frames) and not self._stop.is_set():
            if self.live:
                delay = t0 + i / self.fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            rgb, _ = self.scene.render(i)
            data = torch.from_numpy(rgb).permute(2, 0, 1)
            if device.type != "cpu":
                data = data.to(device, non_blocking=False)
            info = FrameInfo(source_id=source_id, frame_num=i, pts=i / self.fps, ntp_ns=time.time_ns(),
                             width=self.width, height=self.height)
            yield SourceFrame(info, data, "rgb")
            i += 1
