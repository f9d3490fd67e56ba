"""PyTorch engines: a ``torch.nn.Module`` in memory, or a TorchScript file.

TorchScript files are opened with ``torch.jit.load`` (no pickle of arbitrary Python objects);
an Ultralytics ``config.txt`` extra file supplies labels and input size. ``half=True`` runs the
model in float16 (CUDA only; ignored on CPU, where float16 convolutions are slow or missing).

On CUDA, by default, three things make the same model cheaper per batch (each can be turned off):

- ``batch_buckets``: the batch is padded up to the next bucket (1, 2, 4, 8, then multiples of 8)
  and the outputs sliced back, so a muxer that sends batches of 61, 63, 64 ... frames runs the
  model at a few shapes only (cuDNN autotunes each new shape once, at a cost of ~100 ms);
- ``channels_last``: weights and input in NHWC, the layout cuDNN's float16 tensor-core kernels
  use (no layout transposes around each convolution);
- ``cuda_graphs``: the model's kernels are captured once per bucket into a CUDA graph and
  replayed with one launch, so the ~300 kernel launches of a YOLO forward cost the main thread
  ~0.1 ms instead of a few ms. If a model cannot be captured (a host sync inside it), vidflow
  logs why and runs it eagerly.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch

from .base import as_outputs, labels_from, parse_metadata, size_from

__all__ = ["TorchEngine", "bucket"]

log = logging.getLogger(__name__)


def bucket(n: int) -> int:
    """The batch size a batch of ``n`` is padded to: 1, 2, 4, 8, then the next multiple of 8."""
    if n <= 1:
        return 1
    if n <= 8:
        return 1 << (n - 1).bit_length()
    return -(-n // 8) * 8


class TorchEngine:
    """Run ``model`` (an ``nn.Module``, a ``torch.jit.ScriptModule``, or a path to a TorchScript
    file) on ``[B,3,H,W]`` inputs; returns ``{output name: Tensor}``.

    ``input_size=(W, H)``, ``labels`` and ``metadata`` override what the file carries."""

    def __init__(self, model: torch.nn.Module | str | os.PathLike, *, device: torch.device | str = "cpu",
                 half: bool = False, input_size: tuple[int, int] | None = None,
                 labels: tuple[str, ...] | None = None, metadata: dict[str, Any] | None = None,
                 output_names: tuple[str, ...] | None = None, input_name: str = "images",
                 batch_buckets: bool | None = None, channels_last: bool | None = None,
                 cuda_graphs: bool | None = None) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.batch_buckets = cuda if batch_buckets is None else bool(batch_buckets)
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        self.cuda_graphs = cuda if cuda_graphs is None else bool(cuda_graphs) and cuda
        meta: dict[str, Any] = {}
        self.path: str | None = None
        net: torch.nn.Module
        if isinstance(model, (str, os.PathLike)):
            path = self.path = os.fspath(model)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"TorchScript model not found: {path}")
            extra = {"config.txt": ""}
            try:
                net = torch.jit.load(path, map_location=self.device, _extra_files=extra)
            except RuntimeError as e:
                raise ValueError(f"{path}: not a TorchScript file ({e}). Plain pickled .pt checkpoints "
                                 f"are not loaded (unsafe); export with torch.jit.script/trace.") from e
            meta = parse_metadata(extra["config.txt"])
        elif not isinstance(model, torch.nn.Module):
            raise ValueError(f"model: expected an nn.Module or a TorchScript path, got {type(model).__name__}")
        else:
            net = model
        meta.update(metadata or {})
        self.metadata = meta
        self.half = bool(half) and self.device.type == "cuda"
        self.input_dtype = torch.float16 if self.half else torch.float32
        net = net.to(self.device).eval()
        if self.half:
            net = net.half()
        if self.channels_last:
            try:
                net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            except (RuntimeError, TypeError) as e:
                log.info("channels_last not applied: %s", e)
                self.channels_last = False
        self.model: torch.nn.Module = net
        self._graphs: dict[tuple, tuple[torch.Tensor, dict[str, torch.Tensor], Any]] = {}
        self._graph_pool: Any = None
        self._side: Any = None
        # a graph's static input/output are shared: one thread at a time captures or replays
        # (threads sharing one engine, e.g. the bench's B workload, crashed in a concurrent capture)
        self._graph_lock = threading.Lock()
        self.input_name = input_name
        self.input_size = tuple(input_size) if input_size else size_from(meta)
        self.labels = tuple(labels) if labels else labels_from(meta)
        self._names = tuple(output_names) if output_names else None
        self.output_names: tuple[str, ...] = self._names or ("output0",)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B,3,H,W]`` -> ``{name: Tensor}`` on ``self.device``."""
        x = x.to(self.device, self.input_dtype, non_blocking=True)
        b = x.shape[0]
        bp = bucket(b) if self.batch_buckets else b
        if self.cuda_graphs:
            with self._graph_lock:
                g = self._graphs.get((bp, *x.shape[1:])) or self._capture((bp, *x.shape[1:]))
                if g is not None:
                    static_in, static_out, graph = g
                    static_in[:b].copy_(x)              # padding rows keep old images: sliced off below
                    graph.replay()
                    # the graph's outputs are overwritten by its next replay: hand out copies
                    return {k: (v[:b] if v.dim() and v.shape[0] == bp else v).clone() for k, v in static_out.items()}
        if bp != b:
            x = torch.cat([x, x.new_zeros((bp - b, *x.shape[1:]))])
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            raw = self.model(x)
        except RuntimeError as e:
            raise self._size_error(x, e) or e
        out = as_outputs(raw, self._names)
        self.output_names = tuple(out)
        if bp != b:
            out = {k: v[:b] if v.dim() and v.shape[0] == bp else v for k, v in out.items()}
        return out

    def _size_error(self, x: torch.Tensor, e: RuntimeError) -> ValueError | None:
        """A clear error for a TorchScript trace run at a size other than its export size (the
        trace fails deep inside with a shape mismatch); None when the size is not the cause."""
        if self.input_size is None or not isinstance(self.model, torch.jit.ScriptModule) or x.dim() != 4:
            return None
        w, h = self.input_size
        if (x.shape[-1], x.shape[-2]) == (w, h):
            return None
        return ValueError(f"{self.path or 'the TorchScript model'}: its metadata says it was "
                          f"exported at {w}x{h}, and a trace runs at that size only; it got "
                          f"{x.shape[-1]}x{x.shape[-2]}. Set the stage's size: to {w}x{h} (or leave it out), "
                          f"or export to ONNX with dynamic axes for other sizes ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160]})")

    def warmup(self, max_batch: int, shape: tuple[int, ...]) -> int:
        """Run (and on CUDA capture) the model once at every batch bucket up to ``max_batch`` for
        inputs ``[B, *shape]``, so no batch size met later stalls the pipeline on cuDNN autotuning or
        a graph capture. Returns the number of shapes prepared."""
        sizes = sorted({bucket(b) if self.batch_buckets else b for b in range(1, int(max_batch) + 1)})
        if not self.batch_buckets:
            sizes = [int(max_batch)]
        for b in sizes:
            self(torch.zeros((b, *shape), dtype=self.input_dtype, device=self.device))
        return len(sizes)

    def _capture(self, shape: tuple) -> tuple | None:
        """Warm the model up at ``shape`` (TorchScript's profiling runs, cuDNN autotuning) on a side
        stream, then capture one forward into a CUDA graph; None (and graphs off) if it fails."""
        try:
            fmt = torch.channels_last if self.channels_last and len(shape) == 4 else torch.contiguous_format
            static_in = torch.zeros(shape, dtype=self.input_dtype, device=self.device).contiguous(memory_format=fmt)
            if self._side is None:                      # one side stream: its cached blocks get reused
                self._side = torch.cuda.Stream(self.device)
            side = self._side
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # one memory pool for all shapes: the graphs replay one at a time on one stream.
            # thread_local: decoder threads of this process keep making CUDA calls meanwhile (a
            # "global" capture would fail them, e.g. NVDEC's cuvidCreateDecoder with error 900)
            with torch.cuda.graph(graph, pool=self._graph_pool, capture_error_mode="thread_local"):
                out = as_outputs(self.model(static_in), self._names)
            self._graph_pool = graph.pool()
            self.output_names = tuple(out)
            torch.cuda.empty_cache()                    # warm-up workspaces (cuDNN autotuning) go back
        except Exception as e:  # noqa: BLE001 - any capture failure: run eagerly from now on
            log.warning("%s: CUDA graph capture failed (%s: %s); running the model without CUDA graphs",
                        type(self.model).__name__, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.cuda_graphs = False
            self._graphs.clear()
            torch.cuda.synchronize(self.device)
            return None
        self._graphs[shape] = (static_in, out, graph)
        return self._graphs[shape]

    def __repr__(self) -> str:
        return (f"TorchEngine({type(self.model).__name__}, device={self.device}, dtype={self.input_dtype}, "
                f"input_size={self.input_size}, labels={self.labels})")
