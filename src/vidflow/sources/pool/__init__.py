"""Decode processes: sources decode in worker processes, frames reach the pipeline zero-copy.

One Python process decoding 64 cameras in 64 threads spends much of its time fighting for the
GIL: each decoded frame costs some Python (demux, bitstream filter, decoder call, a copy, the
queue), and the pipeline's main thread must win the GIL back after every torch call. With
``Pipeline(decode_processes=K)`` the sources that can be moved (``poolable = True``: ``FileSource``,
``UriSource``/``RtspSource``, the test ``FakeSource``) run in K worker processes instead, so decoding has K GILs of its own and
the main process keeps its GIL for the stages.

How a frame travels::

    worker process (one thread per source)                 pipeline process
    source.frames() -> frame ------- copy into ------> ring[slot]  (same memory: CUDA IPC or
                                     free slot                       POSIX shared memory)
                    -- FrameMsg(sid, gen, slot, info) over a socket ->  SourceFrame(ring[slot], release=...)
                                                                     -> SourceQueue -> muxer
                    <----------- FreeMsg((SlotRef, ...)) ------------  after the muxer's conversion
                                                                     kernel finished (CUDA event)

Each source has a ring of ``queue_size + 2`` frame slots allocated by its worker on the pipeline
device (NV12 ``[H*3//2, W]`` from NVDEC, RGB ``[3, H, W]`` from FFmpeg), shared with the pipeline
once (CUDA: ``torch.multiprocessing``'s IPC handles; CPU: a memory-mapped file in ``/dev/shm``), and
re-sent only when the frame size changes. Per frame only a small message crosses the socket; no
pixel is copied between processes. A worker waits for a free slot before it decodes on, so a file
source loses no frame and memory stays bounded; a live queue that drops its oldest frame gives the
slot back at once.

Failures: a source's error (``SourceError``, pickled whole) ends that source alone, as in a
thread. A worker process that dies (killed, crashed driver) fails the sources it carried, each
with a ``DecodeError`` naming the process and its exit code; the other workers go on.

Workers are started with ``python -c`` running ``_worker.main`` with this process's ``sys.path``
(not ``multiprocessing``'s spawn), so a user's script is never re-imported and needs no
``if __name__ == "__main__"`` guard, and the worker imports the same vidflow as the pipeline.

Files: ``client.py`` (the pipeline side: ``DecodePool``, workers, routes, releases),
``_handle.py`` (``PooledSource``), ``_worker.py`` (the process: runners, ring slots, main loop), ``_ring.py``
(CUDA IPC / ``/dev/shm`` rings), ``_wire.py`` (every message, a frozen dataclass).
"""

from __future__ import annotations

from .client import DecodePool, PooledSource, poolable

__all__ = ["DecodePool", "PooledSource", "poolable"]
