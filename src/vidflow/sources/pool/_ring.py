"""A source's ring of frame slots, shared between its decode process and the pipeline.

CUDA: one ``torch.empty`` tensor on the pipeline device; the pipeline gets the same memory from
the tensor's CUDA IPC handle (``torch.multiprocessing``'s reductions pickle it). CPU: a file in
``/dev/shm`` memory-mapped by both processes; the pipeline unlinks it once mapped, the worker
unlinks the ones the pipeline never mapped when it ends.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import tempfile

import torch

from ._wire import ShmRing

__all__ = ["new_ring", "open_ring", "unlink_quietly"]


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _map_file(path: str, shape: tuple[int, ...], *, create: bool) -> torch.Tensor:
    """A uint8 tensor of ``shape`` over a memory-mapped file (the mapping lives as long as any
    tensor viewing it does)."""
    size = max(1, math.prod(shape))
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    try:
        if create:
            os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return torch.frombuffer(mm, dtype=torch.uint8, count=math.prod(shape)).view(shape)


def new_ring(shape: tuple[int, ...], device: torch.device, name: str) -> tuple[torch.Tensor, torch.Tensor | ShmRing]:
    """A ring of ``shape`` (slots first) made by the worker: ``(ring, what to send)``. On the CPU
    ``name`` names the shared-memory file (unique per process, runner and generation)."""
    if device.type == "cuda":
        ring = torch.empty(shape, dtype=torch.uint8, device=device)
        return ring, ring
    path = os.path.join(_shm_dir(), name)
    return _map_file(path, shape, create=True), ShmRing(path, tuple(shape))


def open_ring(payload: torch.Tensor | ShmRing) -> torch.Tensor:
    """The pipeline's view of a ring the worker sent."""
    if isinstance(payload, torch.Tensor):      # CUDA: torch rebuilt it from its IPC handle
        return payload
    ring = _map_file(payload.path, payload.shape, create=False)   # CPU: mapped, then unlinked
    unlink_quietly(payload.path)
    return ring


def unlink_quietly(path: str) -> None:
    """Remove a ring file that may already be gone (the other side unlinked it first)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
