"""Strict GPU-only mode: an image-sized tensor copied from the device to the host raises at once.

``Pipeline(strict_device=True)`` (YAML ``strict_device: true``) runs every stage call inside
:func:`strict_device`::

    with strict_device("detect"):
        batch = stage(batch)

Inside, any device -> host copy (``.cpu()``, ``.to("cpu")``, ``.numpy()`` of a CUDA tensor via
``.cpu()``, ``copy_`` into a host tensor, ``torch.save``, ...) of an **image-sized** tensor --
at least ``min_pixels`` elements in its two last dimensions (or its two first, for HWC) and at
least 3 dimensions, by default 64x64 -- raises :class:`StrictDeviceError` naming the stage and
the tensor's shape. Small copies (box tables, counts, ``.item()``) pass: post-processing needs
them. It is a torch dispatch mode, thread-local, so each pipeline thread checks its own stage
calls; the cost is one Python call per tensor op while active (a debugging / CI mode).

``devices``: the device types watched (``("cuda",)``); tests on a CPU-only machine can watch
``"meta"`` tensors to exercise the same path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["StrictDeviceError", "strict_device", "is_image_sized"]

_aten = torch.ops.aten
_COPY_OPS = {_aten._to_copy.default, _aten.copy_.default, _aten._copy_from.default,
             _aten._copy_from_and_resize.default}


class StrictDeviceError(RuntimeError):
    """An image-sized tensor crossed to the host under :func:`strict_device`."""


def is_image_sized(shape: Sequence[int], min_pixels: int = 64 * 64) -> bool:
    """True for tensors of >= 3 dims whose last two (or first two, HWC) dims hold >= ``min_pixels``."""
    if len(shape) < 3:
        return False
    return shape[-1] * shape[-2] >= min_pixels or shape[0] * shape[1] >= min_pixels and shape[-1] <= 4


def _is_host(dev: Any) -> bool:
    return dev is not None and torch.device(dev).type == "cpu"


class _StrictMode(TorchDispatchMode):
    def __init__(self, stage: str, devices: tuple[str, ...], min_pixels: int) -> None:
        super().__init__()
        self.stage, self.devices, self.min_pixels = stage, devices, min_pixels

    def _check(self, src: Any, to_host: bool) -> None:
        if (to_host and isinstance(src, torch.Tensor) and src.device.type in self.devices
                and is_image_sized(tuple(src.shape), self.min_pixels)):
            raise StrictDeviceError(
                f"strict_device: stage {self.stage!r} copied an image-sized tensor "
                f"{list(src.shape)} {str(src.dtype).removeprefix('torch.')} from {src.device} to the host "
                f"(keep frames on the device, or turn strict_device off)")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _COPY_OPS:
            if func is _aten._to_copy.default:
                self._check(args[0], _is_host(kwargs.get("device")))
            elif func is _aten.copy_.default:
                dst, src = args[0], args[1]
                self._check(src, isinstance(dst, torch.Tensor) and dst.device.type == "cpu")
            else:
                src, dst = args[0], args[1]
                self._check(src, isinstance(dst, torch.Tensor) and dst.device.type == "cpu")
        return func(*args, **kwargs)


@contextmanager
def strict_device(stage: str, *, enabled: bool = True, devices: Sequence[str] = ("cuda",),
                  min_pixels: int = 64 * 64) -> Iterator[None]:
    """Raise :class:`StrictDeviceError` on device -> host copies of image-sized tensors inside
    the block, naming ``stage``. ``enabled=False`` makes it a no-op (so callers can always use it)."""
    if not enabled:
        yield
        return
    with _StrictMode(str(stage), tuple(devices), int(min_pixels)):
        yield
