"""ONNX engine.

* CPU: onnxruntime (``CPUExecutionProvider``); inputs/outputs are shared with torch through
  numpy without copies.
* CUDA: the graph is converted to torch modules (:mod:`vidflow.engines.onnx_torch`) and runs as a
  torch model on the GPU (input and output stay in torch CUDA memory). ``backend="onnxruntime"``
  on CUDA is refused with an error naming ``backend="torch"``: an onnxruntime-gpu I/O binding was
  written once but never ran anywhere, so it was removed until a machine with onnxruntime-gpu
  can test one. ``backend="torch"`` on the CPU runs the converter there too.

Metadata: Ultralytics writes ``names``/``imgsz``/``stride`` into ``metadata_props``; they become
``labels``, ``input_size`` and ``metadata``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

from .base import labels_from, parse_metadata, size_from

__all__ = ["OnnxEngine"]

Backend = Literal["auto", "onnxruntime", "torch"]
_NP = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


class OnnxEngine:
    """Run an ONNX file on ``[B,3,H,W]`` inputs; returns ``{output name: Tensor}`` on ``device``."""

    def __init__(self, path: str | os.PathLike, *, device: torch.device | str = "cpu", half: bool = False,
                 backend: Backend = "auto", input_size: tuple[int, int] | None = None,
                 labels: tuple[str, ...] | None = None, threads: int | None = None) -> None:
        import onnx

        if backend not in ("auto", "onnxruntime", "torch"):
            raise ValueError(f"backend: expected 'auto', 'onnxruntime' or 'torch', got {backend!r}")
        if backend == "onnxruntime" and torch.device(device).type != "cpu":
            raise ValueError(f"backend='onnxruntime' on {torch.device(device).type} is not available: vidflow's "
                             "onnxruntime-gpu binding never ran on any machine, so it is not offered; use "
                             "backend='torch' (the ONNX->torch converter, what 'auto' picks off the CPU) "
                             "or device='cpu' for onnxruntime on the CPU")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.path = path
        self.device = torch.device(device)
        proto = onnx.load(path)
        self.metadata: dict[str, Any] = parse_metadata({p.key: p.value for p in proto.metadata_props})
        inits = {t.name for t in proto.graph.initializer}
        ins = [i for i in proto.graph.input if i.name not in inits]
        if len(ins) != 1:
            raise ValueError(f"{path}: expected a model with one input, got {[i.name for i in ins]}")
        self.input_name = ins[0].name
        self.output_names = tuple(o.name for o in proto.graph.output)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ins[0].type.tensor_type.shape.dim]
        fixed = (dims[3], dims[2]) if len(dims) == 4 and dims[2] and dims[3] else None
        self.input_size = tuple(input_size) if input_size else (size_from(self.metadata) or fixed)
        self.labels = tuple(labels) if labels else labels_from(self.metadata)
        self.half = bool(half) and self.device.type == "cuda"
        file_half = ins[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        self._file_dtype = torch.float16 if file_half else torch.float32
        use_ort = self.device.type == "cpu" and backend != "torch"
        self.backend = "onnxruntime" if use_ort else "torch"
        if use_ort:
            import onnxruntime as ort
            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = int(threads)
            self.session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
            self.input_dtype = self._file_dtype
            self.module = None
        else:
            from .onnx_torch import OnnxTorchModule
            m = OnnxTorchModule(proto).to(self.device).eval()
            if self.half:
                m = m.half()
            self.module = m
            self.session = None
            self.input_dtype = torch.float16 if self.half else torch.float32
        del proto

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B,3,H,W]`` -> ``{name: Tensor}`` on ``self.device``."""
        x = x.to(self.device, self.input_dtype, non_blocking=True).contiguous()
        if self.module is not None:
            return dict(zip(self.output_names, self.module(x)))
        outs = self.session.run(list(self.output_names), {self.input_name: x.numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs)}

    def __repr__(self) -> str:
        return (f"OnnxEngine({os.path.basename(self.path)!r}, backend={self.backend}, device={self.device}, "
                f"dtype={self.input_dtype}, input_size={self.input_size}, labels={self.labels})")
