"""Models in one line: files vidflow runs with their metadata (``vidflow export``).

vidflow reads a model file's metadata by itself: class names, input size, task and head, as
Ultralytics writes them (ONNX ``metadata_props``, TorchScript's ``config.txt`` extra file). So:

- **Ultralytics** (YOLOv8, YOLO11, -seg, -pose): ``yolo export model=yolo11n.pt format=onnx`` (or
  ``format=torchscript``) and then ``model: yolo11n.onnx``; nothing else to say.
- **any nn.Module** (Python): :func:`export_module` traces it (or scripts it) and writes the same
  metadata: ``export_module(net, torch.zeros(1, 3, 640, 640), "net.torchscript", names=[...])``;
  a ``.onnx`` path writes ONNX instead (``pip install 'vidflow[onnx]'``).
- **torchvision detection models** (Faster R-CNN, RetinaNet, SSD, FCOS: their own resizing and
  NMS inside): wrap them in :class:`Detections` (their ``list[dict]`` output -> the ``end2end``
  layout ``[B, K, 6]``) and script them: ``export_module(Detections(m), x, "frcnn.torchscript",
  names=weights.meta["categories"], head="end2end", script=True)``.
- ``vidflow export FILE`` prints what vidflow reads from a file (and refuses pickles with the
  command that exports them); ``vidflow export FILE --names a,b --size 640x480 -o OUT`` writes
  metadata into a copy; ``vidflow export pkg.mod:build -o m.torchscript --size 640x640`` exports
  the module ``build()`` returns (or the module named ``build``).

Pickled checkpoints (``yolo11n.pt``, ``torch.save(model)``) are never unpickled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["Detections", "export_module", "metadata", "write_metadata", "read_metadata", "describe", "main"]

TASKS = ("detect", "segment", "pose", "semantic", "classify")


def metadata(*, names: Sequence[str] | None = None, size: tuple[int, int] | None = None, task: str | None = None,
             head: str | None = None, kpt_shape: Sequence[int] | None = None, **extra: Any) -> dict[str, Any]:
    """Model metadata in Ultralytics' layout: ``names {i: name}``, ``imgsz [H, W]`` (from ``size
    (W, H)``), ``task``, ``format`` (the head, when it is not the task's default) and ``kpt_shape``."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    md: dict[str, Any] = dict(extra)
    if names is not None:
        names = [str(n) for n in names]
        if not names:
            raise ValueError("names: expected at least one class name")
        md["names"] = dict(enumerate(names))
    if size is not None:
        w, h = (int(size[0]), int(size[1]))
        if w < 1 or h < 1:
            raise ValueError(f"size: expected (W, H) >= 1, got {size}")
        md["imgsz"] = [h, w]
    if task is not None:
        md["task"] = task
    if head is not None:
        md["format"] = head
        md.setdefault("task", "detect" if head in ("yolov8", "yolov5", "end2end") else head)
    if kpt_shape is not None:
        md["kpt_shape"] = [int(v) for v in kpt_shape]
    return md


class Detections(torch.nn.Module):
    """A torchvision detection model (``forward(list of [3,H,W]) -> list of {"boxes", "scores",
    "labels"}``, its own resizing and NMS inside) as a ``[B,3,H,W] -> [B, max_det, 6]`` module
    (x1, y1, x2, y2, score, class; zero rows pad): vidflow's ``end2end`` head. Scriptable."""

    def __init__(self, model: torch.nn.Module, max_det: int = 100) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_det = int(max_det)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = [x[i] for i in range(x.shape[0])]
        outs = self.model(images)
        if isinstance(outs, tuple):            # scripted torchvision models return (losses, detections)
            outs = outs[1]
        rows = []
        for o in outs:
            d = torch.cat([o["boxes"].float(), o["scores"].float()[:, None], o["labels"].float()[:, None]], 1)
            d = d[: self.max_det]
            rows.append(torch.nn.functional.pad(d, [0, 0, 0, self.max_det - d.shape[0]]))
        return torch.stack(rows)


def _example(example: torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(example, torch.Tensor):
        return example
    shape = tuple(int(v) for v in example)
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"example: expected a tensor or a shape (B, 3, H, W), got {shape}")
    return torch.rand(shape)


def export_module(module: torch.nn.Module, example: torch.Tensor | Sequence[int], path: str | os.PathLike, *,
                  names: Sequence[str] | None = None, task: str | None = None, head: str | None = None,
                  size: tuple[int, int] | None = None, kpt_shape: Sequence[int] | None = None,
                  script: bool = False, check: bool = True, opset: int = 17) -> Path:
    """Write ``module`` to ``path`` with its metadata: TorchScript (``.torchscript`` / ``.pt`` /
    ``.jit``; traced on ``example``, or ``torch.jit.script`` with ``script=True``) or ONNX (``.onnx``,
    dynamic batch). ``example``: a ``[B,3,H,W]`` float tensor as vidflow feeds it (RGB 0..1) or
    its shape; ``size (W, H)`` defaults to the example's. ``check``: load the file back through
    vidflow and compare its output with the module's. Returns the path."""
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    p = Path(path)
    x = _example(example)
    module = module.eval()
    if task is None and head is None:
        task = "detect"
    md = metadata(names=names, task=task, head=head, kpt_shape=kpt_shape,
                  size=size or (int(x.shape[3]), int(x.shape[2])))
    p.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad():
        if p.suffix.lower() == ".onnx":
            _onnx_export(module, x, p, md, opset)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                sm = torch.jit.script(module) if script else torch.jit.trace(module, x, check_trace=False)
            torch.jit.save(sm, str(p), _extra_files={"config.txt": json.dumps(md)})
        if check:
            _check(module, x, p)
    return p


def _onnx_export(module: torch.nn.Module, x: torch.Tensor, p: Path, md: dict[str, Any], opset: int) -> None:
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError:
        raise ModuleNotFoundError("writing ONNX needs the onnx extra: pip install 'vidflow[onnx]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(module, (x,), str(p), input_names=["images"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    _write_raw(p, p, md)


def _check(module: torch.nn.Module, x: torch.Tensor, p: Path) -> None:
    """The exported file, loaded as vidflow loads it, gives the module's outputs."""
    from .engines.base import as_outputs
    from .engines.load import load_model

    eng, _ = load_model(str(p))
    want = as_outputs(module(x))
    got = eng(x)
    for (k, a), b in zip(want.items(), got.values()):
        if a.shape != b.shape or not torch.allclose(a.float(), b.float().cpu(), rtol=1e-3, atol=1e-3):
            raise ValueError(f"{p}: the exported model's output {k} differs from the module's "
                             f"(shape {tuple(b.shape)} vs {tuple(a.shape)}); trace with script=True if the "
                             "module has data-dependent control flow")


def write_metadata(path: str | os.PathLike, out: str | os.PathLike | None = None, **md: Any) -> Path:
    """Merge ``md`` (see :func:`metadata`'s output, or its keywords ``names``, ``size``, ``task``,
    ``head``, ``kpt_shape``) into the metadata of an ONNX or TorchScript file, written to ``out``
    (default: in place). Returns the path written."""
    keys = {k: md.pop(k) for k in ("names", "size", "task", "head", "kpt_shape") if k in md}
    return _write_raw(Path(path), Path(out) if out is not None else Path(path), {**md, **metadata(**keys)})


def _write_raw(src: Path, dst: Path, md: dict[str, Any]) -> Path:
    if src.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(src))
        props = {p.key: p.value for p in proto.metadata_props}
        props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in md.items()})
        del proto.metadata_props[:]
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(dst))
        return dst
    from .engines.base import parse_metadata

    extra = {"config.txt": ""}
    sm = torch.jit.load(str(src), map_location="cpu", _extra_files=extra)
    merged = {**parse_metadata(extra["config.txt"]), **md}
    torch.jit.save(sm, str(dst), _extra_files={"config.txt": json.dumps(merged)})
    return dst


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What vidflow reads from a model file: ``labels``, ``input_size (W, H)``, ``task``, ``head``,
    ``kpt_shape`` and the raw metadata; ``ValueError`` for a pickle (with the export command)."""
    from .engines.load import head_for, load_model

    _, meta = load_model(os.fspath(path))
    return {**meta, "head": head_for(meta) or "yolov8"}


def describe(path: str | os.PathLike) -> str:
    """One paragraph about a model file, as ``vidflow export FILE`` prints it."""
    m = read_metadata(path)
    labels = m.get("labels")
    lab = (f"{len(labels)} classes ({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''})"
           if labels else "no class names (give them: --names a,b,c, or labels: in the YAML)")
    size = m.get("input_size")
    lines = [f"{path}:",
             f"  task   {m.get('task') or 'unknown (detect assumed)'}",
             f"  head   {m['head']}",
             f"  labels {lab}",
             f"  input  {f'{size[0]}x{size[1]}' if size else 'any size (the muxer size is used)'}"]
    if m.get("kpt_shape"):
        lines.append(f"  keypoints {m['kpt_shape']}")
    lines.append(f"  use it: - detect: {{model: {path}}}")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    try:
        w, _, h = text.lower().partition("x")
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (640x640) or one number, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidflow export",
        description="Show what vidflow reads from a model file, write metadata into one, or export an "
                    "nn.Module (pkg.mod:name, a module or a function returning one) to TorchScript / ONNX. "
                    "Ultralytics: `yolo export model=yolo11n.pt format=onnx` is all it takes (docs/MODELS.md).")
    p.add_argument("model", help="model.onnx | model.torchscript | pkg.module:name")
    p.add_argument("-o", "--out", help="the file to write (.torchscript, .pt, .jit or .onnx)")
    p.add_argument("--names", help="class names, comma-separated, or @FILE with one per line")
    p.add_argument("--size", type=_size, help="model input WxH (default for pkg.module:name: 640x640)")
    p.add_argument("--task", choices=TASKS, help="what the model does")
    p.add_argument("--head", choices=("yolov8", "yolov5", "end2end", "segment", "pose", "semantic"),
                   help="the output layout (default: from the task)")
    p.add_argument("--kpt-shape", help="keypoints per object and values each, e.g. 17,3")
    p.add_argument("--script", action="store_true", help="torch.jit.script instead of tracing")
    return p


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.startswith("@"):
        return [ln.strip() for ln in Path(text[1:]).read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [n.strip() for n in text.split(",") if n.strip()]


def _load_module(spec: str) -> torch.nn.Module:
    from . import _lazy

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj = _lazy.resolve(spec)
    if not isinstance(obj, torch.nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(f"{spec}: expected an nn.Module or a function returning one, got {type(obj).__name__}")
    return obj


def _pickle(path: str) -> bool:
    from .engines.load import _is_pickle_checkpoint

    return (os.path.isfile(path) and path.lower().endswith((".pt", ".pth", ".ckpt", ".bin"))
            and _is_pickle_checkpoint(path))


def main(argv: Sequence[str] | None = None) -> int:
    """``vidflow export ...``; returns the exit status (0 ok, 1 failed, 2 usage)."""
    try:
        a = _parser().parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        md = dict(names=_names(a.names), size=a.size, task=a.task, head=a.head,
                  kpt_shape=[int(v) for v in a.kpt_shape.split(",")] if a.kpt_shape else None)
        md = {k: v for k, v in md.items() if v is not None}
        if _pickle(a.model):
            from .engines.load import export_hint

            print(f"vidflow export: {export_hint(a.model)}", file=sys.stderr)
            return 2
        if ":" in a.model and not os.path.exists(a.model):
            if not a.out:
                print("vidflow export: exporting a module needs -o FILE.torchscript (or .onnx)", file=sys.stderr)
                return 2
            size = md.pop("size", (640, 640))
            path = export_module(_load_module(a.model), (1, 3, size[1], size[0]), a.out, size=size,
                                 script=a.script, **md)
        elif md or a.out:
            path = write_metadata(a.model, a.out, **md)
        else:
            path = Path(a.model)
        print(describe(path))
        return 0
    except FileNotFoundError as e:
        print(f"vidflow export: {e}", file=sys.stderr)
        return 2
    except (ValueError, ModuleNotFoundError, ImportError, AttributeError, RuntimeError, OSError) as e:
        print(f"vidflow export: {e}", file=sys.stderr)
        return 1
