"""A small ONNX -> PyTorch converter: runs an ONNX graph node by node with torch ops.

Used to run ONNX models on CUDA (vidflow has no onnxruntime-gpu path), so tensors stay on the
GPU. It covers the operators of common CNN detector/classifier exports (YOLOv5/v8/11, ResNet-
style classifiers); an unsupported operator raises ``NotImplementedError`` naming it at load
time. Weights become buffers (``.to(device)`` / ``.half()`` apply); integer constants and shape
arithmetic stay on the CPU so shape computations do not round-trip through the GPU.
Checked against onnxruntime in ``tests/unit/test_engines.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

__all__ = ["OnnxTorchModule"]

_DT = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
       9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            v = torch.from_numpy(numpy_helper.to_array(v).copy())
        elif isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


class OnnxTorchModule(torch.nn.Module):
    """``OnnxTorchModule(model_proto)(*inputs) -> tuple(outputs)`` in graph output order."""

    def __init__(self, model: onnx.ModelProto | str) -> None:
        super().__init__()
        if isinstance(model, str):
            model = onnx.load(model)
        g = model.graph
        self.input_names = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
        self.output_names = [o.name for o in g.output]
        self._consts: dict[str, torch.Tensor] = {}  # CPU non-float constants
        self._bufname: dict[str, str] = {}
        # shape-like inputs (Resize roi/scales/sizes) are read on the host: keep them there, so
        # reading them is no device sync in the middle of the forward pass
        self._host_inputs = {n.input[i] for n in g.node if n.op_type == "Resize" for i in (1, 2, 3)
                             if len(n.input) > i and n.input[i]}
        for init in g.initializer:
            self._add_const(init.name, torch.from_numpy(numpy_helper.to_array(init).copy()))
        self._nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        missing = sorted({n.op_type for n in g.node if n.op_type not in _OPS and n.op_type != "Constant"})
        if missing:
            raise NotImplementedError(f"ONNX operators not supported by the torch converter: {missing}")
        for n in g.node:
            a = _attrs(n)
            if n.op_type == "Constant":
                self._add_const(n.output[0], _constant(a))
            else:
                self._nodes.append((n.op_type, list(n.input), list(n.output), a))

    def _add_const(self, name: str, t: torch.Tensor) -> None:
        if t.is_floating_point() and t.numel() > 1 and name not in self._host_inputs:
            b = f"c{len(self._bufname)}"
            self.register_buffer(b, t, persistent=False)
            self._bufname[name] = b
        else:
            self._consts[name] = t

    @property
    def float_dtype(self) -> torch.dtype:
        for b in self.buffers():
            return b.dtype
        return torch.float32

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, torch.Tensor | None] = dict(self._consts)
        env.update({k: getattr(self, b) for k, b in self._bufname.items()})
        env[""] = None
        env.update(zip(self.input_names, inputs))
        ctx = {"float": self.float_dtype}
        for op, ins, outs, a in self._nodes:
            res = _OPS[op]([env[i] for i in ins], a, ctx)
            if isinstance(res, torch.Tensor):
                res = (res,)
            for name, v in zip(outs, res):
                env[name] = v
        return tuple(cast(torch.Tensor, env[o]) for o in self.output_names)   # ("" is the only None)


def _constant(a: dict[str, Any]) -> torch.Tensor:
    if "value" in a:
        return a["value"]
    if "value_float" in a:
        return torch.tensor(a["value_float"], dtype=torch.float32)
    if "value_floats" in a:
        return torch.tensor(a["value_floats"], dtype=torch.float32)
    if "value_int" in a:
        return torch.tensor(a["value_int"], dtype=torch.int64)
    if "value_ints" in a:
        return torch.tensor(a["value_ints"], dtype=torch.int64)
    raise NotImplementedError(f"Constant with attributes {sorted(a)}")


def _align(*ts: torch.Tensor) -> list[torch.Tensor]:
    """Put operands on one device (CUDA wins); CPU floats follow a CUDA float operand's dtype."""
    ref = next((t for t in ts if t.is_cuda), None)
    if ref is None:
        return list(ts)
    fdt = next((t.dtype for t in ts if t.is_cuda and t.is_floating_point()), None)
    out = []
    for t in ts:
        if not t.is_cuda:
            t = t.to(ref.device, fdt if (fdt is not None and t.is_floating_point()) else t.dtype)
        out.append(t)
    return out


def _binary(fn: Callable) -> Callable:
    def op(x, a, c):
        return fn(*_align(x[0], x[1]))
    return op


def _unary(fn: Callable) -> Callable:
    return lambda x, a, c: fn(x[0])


def _div(a, b):
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _conv(x, a, c):
    w = x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    pads = a.get("pads", [0] * 2 * nd)
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError("Conv auto_pad=SAME_*")
    inp = x[0]
    if pads[:nd] != pads[nd:]:
        pp = []
        for i in reversed(range(nd)):
            pp += [pads[i], pads[i + nd]]
        inp, pad = F.pad(inp, pp), 0
    else:
        pad = pads[:nd]
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(inp, w, b, stride=a.get("strides", 1), padding=pad, dilation=a.get("dilations", 1),
              groups=a.get("group", 1))


def _conv_transpose(x, a, c):
    w = x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or "output_shape" in a:
        raise NotImplementedError("ConvTranspose auto_pad=SAME_* / output_shape")
    pads = a.get("pads", [0] * 2 * nd)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    sym = pads[:nd] == pads[nd:]
    y = fn(x[0], w, b, stride=a.get("strides", 1), padding=pads[:nd] if sym else 0,
           output_padding=a.get("output_padding", 0), groups=a.get("group", 1), dilation=a.get("dilations", 1))
    if not sym:   # crop begin/end pads per spatial axis
        idx = [slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[i + nd]) for i in range(nd)]
        y = y[tuple(idx)]
    return y


def _pool(kind):
    def op(x, a, c):
        k = a["kernel_shape"]
        nd = len(k)
        pads = a.get("pads", [0] * 2 * nd)
        inp = x[0]
        if pads[:nd] != pads[nd:]:
            pp = []
            for i in reversed(range(nd)):
                pp += [pads[i], pads[i + nd]]
            inp = F.pad(inp, pp, value=float("-inf") if kind == "max" else 0.0)
            pads = [0] * 2 * nd
        s = a.get("strides", [1] * nd)
        if kind == "max":
            return F.max_pool2d(inp, k, s, pads[:nd], a.get("dilations", 1), bool(a.get("ceil_mode", 0)))
        return F.avg_pool2d(inp, k, s, pads[:nd], bool(a.get("ceil_mode", 0)),
                            bool(a.get("count_include_pad", 0)))
    return op


def _resize(x, a, c):
    inp = x[0]
    scales = x[2] if len(x) > 2 and x[2] is not None and x[2].numel() else None
    sizes = _ints(x[3]) if len(x) > 3 and x[3] is not None and x[3].numel() else None
    mode = a.get("mode", "nearest")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    size = tuple(sizes[2:]) if sizes else None
    sf = None if size else tuple(float(s) for s in scales.tolist()[2:])
    if mode == "nearest":
        if ctm not in ("asymmetric",) or a.get("nearest_mode", "round_prefer_floor") != "floor":
            raise NotImplementedError(f"Resize nearest with {ctm}/{a.get('nearest_mode')}")
        return F.interpolate(inp, size=size, scale_factor=sf, mode="nearest")
    if mode == "linear":
        if ctm in ("half_pixel", "pytorch_half_pixel"):
            return F.interpolate(inp, size=size, scale_factor=sf, mode="bilinear", align_corners=False)
        if ctm == "align_corners":
            return F.interpolate(inp, size=size, scale_factor=sf, mode="bilinear", align_corners=True)
    raise NotImplementedError(f"Resize mode={mode} coordinate_transformation_mode={ctm}")


def _reshape(x, a, c):
    shape = _ints(x[1])
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


def _split(x, a, c):
    axis = a.get("axis", 0)
    split = _ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("split")
    if split is None:
        n = a.get("num_outputs")
        if n is None:
            raise NotImplementedError("Split without sizes or num_outputs")
        dim = x[0].shape[axis]
        split = [-(-dim // n)] * (n - 1)
        split.append(dim - sum(split))
    return tuple(torch.split(x[0], split, dim=axis))


def _slice(x, a, c):
    data = x[0]
    starts, ends = _ints(x[1]), _ints(x[2])
    axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    idx = [slice(None)] * data.dim()
    neg = []
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax %= data.dim()
        n = data.shape[ax]
        if st == 0:
            raise ValueError("Slice: step 0")
        if st > 0:
            s = max(0, min(n, s + n if s < 0 else s))
            e = max(0, min(n, e + n if e < 0 else e))
            idx[ax] = slice(s, e, st)
        else:  # ONNX: start clamped to [0, n-1], end to [-1, n-1], walk down
            s = max(0, min(n - 1, s + n if s < 0 else s))
            e = max(-1, min(n - 1, e + n if e < 0 else e))
            neg.append((ax, torch.arange(s, e, st, device=data.device)))
    out = data[tuple(idx)]
    for ax, ind in neg:
        out = out.index_select(ax, ind)
    return out


def _gather(x, a, c):
    data, ind = x[0], x[1]
    axis = a.get("axis", 0) % data.dim()
    if ind.device != data.device:
        ind = ind.to(data.device)
    ind = torch.where(ind < 0, ind + data.shape[axis], ind).long()
    out = data.index_select(axis, ind.reshape(-1))
    return out.reshape(data.shape[:axis] + ind.shape + data.shape[axis + 1:])


def _unsqueeze(x, a, c):
    axes = _ints(x[1]) if len(x) > 1 else a["axes"]
    out = x[0]
    nd = out.dim() + len(axes)
    for ax in sorted(ax % nd for ax in axes):
        out = out.unsqueeze(ax)
    return out


def _squeeze(x, a, c):
    axes = _ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("axes")
    if axes is None:
        return x[0].squeeze()
    return x[0].squeeze(tuple(ax % x[0].dim() for ax in axes))


def _cast(x, a, c):
    dt = _DT[a["to"]]
    if dt in (torch.float32, torch.float16) and x[0].is_cuda:
        dt = c["float"]
    return x[0].to(dt)


def _expand(x, a, c):
    shape = torch.broadcast_shapes(x[0].shape, tuple(_ints(x[1])))
    return x[0].expand(shape)


def _constant_of_shape(x, a, c):
    v = a.get("value", torch.zeros(1))
    return torch.full(tuple(_ints(x[0])), v.reshape(-1)[0].item(), dtype=v.dtype)


def _range(x, a, c):
    start, limit, delta = (t.item() for t in x)
    dt = x[0].dtype
    return torch.arange(start, limit, delta, dtype=dt)


def _concat(x, a, c):
    ts = _align(*[t for t in x if t is not None])
    return torch.cat(ts, dim=a["axis"])


def _shape(x, a, c):
    s = list(x[0].shape)[a.get("start", 0):a.get("end", None)]
    return torch.tensor(s, dtype=torch.int64)


def _gemm(x, a, c):
    A, B = x[0], x[1]
    if a.get("transA", 0):
        A = A.t()
    if a.get("transB", 0):
        B = B.t()
    y = a.get("alpha", 1.0) * (A @ B)
    if len(x) > 2 and x[2] is not None:
        y = y + a.get("beta", 1.0) * x[2]
    return y


def _clip(x, a, c):
    lo = x[1].item() if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2].item() if len(x) > 2 and x[2] is not None else a.get("max")
    return x[0].clamp(lo, hi)


def _bn(x, a, c):
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5))


def _pad(x, a, c):
    data = x[0]
    pads = _ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("pads")
    value = x[2].item() if len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
    nd = data.dim()
    axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(nd))
    full = [0] * (2 * nd)
    for k, ax in enumerate(axes):
        full[ax % nd], full[ax % nd + nd] = pads[k], pads[k + len(axes)]
    pp = []
    for i in reversed(range(nd)):
        pp += [full[i], full[i + nd]]
    mode = a.get("mode", "constant")
    if mode == "constant":
        return F.pad(data, pp, value=value)
    if mode in ("reflect", "edge"):
        k = next(i for i in range(nd) if full[i] or full[i + nd])  # torch pads trailing dims only
        return F.pad(data, pp[: 2 * (nd - k)], mode="reflect" if mode == "reflect" else "replicate")
    raise NotImplementedError(f"Pad mode={mode}")


def _reduce(fn):
    def op(x, a, c):
        axes = _ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("axes")
        keep = bool(a.get("keepdims", 1))
        if axes is None:
            axes = list(range(x[0].dim()))
        return fn(x[0], dim=tuple(axes), keepdim=keep)
    return op


_OPS: dict[str, Callable] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _unary(lambda t: t.mean(dim=tuple(range(2, t.dim())), keepdim=True)),
    "Resize": _resize, "Pad": _pad, "Reshape": _reshape, "Split": _split, "Slice": _slice, "Gather": _gather,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Cast": _cast, "Expand": _expand,
    "ConstantOfShape": _constant_of_shape, "Range": _range, "Concat": _concat, "Shape": _shape,
    "Transpose": lambda x, a, c: x[0].permute(a.get("perm", list(reversed(range(x[0].dim()))))),
    "Flatten": lambda x, a, c: x[0].flatten(0, a.get("axis", 1) - 1).flatten(1) if a.get("axis", 1) > 0
    else x[0].reshape(1, -1),
    "Identity": _unary(lambda t: t), "Sigmoid": _unary(torch.sigmoid), "Relu": _unary(F.relu),
    "Tanh": _unary(torch.tanh), "Exp": _unary(torch.exp), "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg),
    "Softmax": lambda x, a, c: torch.softmax(x[0], a.get("axis", -1)),
    "LeakyRelu": lambda x, a, c: F.leaky_relu(x[0], a.get("alpha", 0.01)),
    "HardSigmoid": lambda x, a, c: (x[0] * a.get("alpha", 0.2) + a.get("beta", 0.5)).clamp(0, 1),
    "HardSwish": _unary(F.hardswish), "Clip": _clip, "BatchNormalization": _bn, "Gemm": _gemm,
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(_div),
    "Pow": _binary(torch.pow), "MatMul": _binary(torch.matmul), "Max": _binary(torch.maximum),
    "Min": _binary(torch.minimum), "Equal": _binary(torch.eq), "Where": lambda x, a, c: torch.where(*_align(*x)),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(lambda t, dim, keepdim: t.amax(dim=dim, keepdim=keepdim)),
}
