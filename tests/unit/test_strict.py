"""strict_device on a CPU-only machine: "meta" tensors stand in for the device."""

from __future__ import annotations

import pytest
import torch

from vidflow.strict import StrictDeviceError, is_image_sized, strict_device


def _img(*shape):
    return torch.zeros(*shape, device="meta")


@pytest.mark.parametrize("copy", [
    lambda t: t.cpu(),
    lambda t: t.to("cpu"),
    lambda t: t.to(torch.device("cpu"), torch.float16),
    lambda t: torch.empty(t.shape).copy_(t),
])
def test_image_sized_copies_to_the_host_raise_naming_the_stage(copy):
    with pytest.raises(StrictDeviceError, match=r"stage 'leaky' copied an image-sized tensor \[2, 3, 128, 96\] float32 from meta"):
        with strict_device("leaky", devices=("meta",)):
            copy(_img(2, 3, 128, 96))


def test_small_copies_and_device_work_pass():
    with strict_device("ok", devices=("meta",)):
        x = _img(2, 3, 128, 128)
        y = (x * 2).sum((2, 3))                 # device work
        assert y.shape == (2, 3)
        z = torch.zeros(300, 4)                 # host tensors are not watched
        z.clone()
    # host-only tensors of image size are fine too (nothing crossed)
    with strict_device("host", devices=("meta",)):
        torch.zeros(3, 640, 640).clone()


def test_disabled_and_outside_is_a_no_op():
    with strict_device("off", enabled=False, devices=("meta",)):
        with pytest.raises(NotImplementedError):   # meta -> cpu itself is impossible: torch's own error
            _img(1, 3, 128, 128).cpu()
    with pytest.raises(NotImplementedError):
        _img(1, 3, 128, 128).cpu()


def test_image_sized():
    assert is_image_sized((1, 3, 64, 64)) and is_image_sized((720, 1280, 3)) and is_image_sized((5, 80, 60))
    assert not is_image_sized((300, 4)) and not is_image_sized((2, 3, 8, 8)) and not is_image_sized((4096,))
